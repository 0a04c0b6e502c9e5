"""The dead-letter use cases over their ports."""
