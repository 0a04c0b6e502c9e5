"""What a dead letter is, how it is referred to, and the order it is re-driven in (pure)."""
