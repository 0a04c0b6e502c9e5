"""What replay decides without I/O: generation names, catch-up rules, digest differences, time travel."""
