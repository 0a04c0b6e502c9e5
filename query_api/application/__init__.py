"""Read use cases that need more than one lookup: waiting for a version."""
