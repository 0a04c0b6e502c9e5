"""Command handlers: load aggregates through a unit of work, let them decide, commit the result."""
