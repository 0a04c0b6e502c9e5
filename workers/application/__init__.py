"""What the workers do with an event: send once, build once, retry, dead-letter."""
