"""What the workers compute, without I/O: the campaign report fold and the welcome message."""
