"""How people reach the dead-letter operations (the `campaigns dlq` commands)."""
