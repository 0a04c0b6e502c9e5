"""Redis read models, the events notifications, and the MongoDB events log (read-only)."""
