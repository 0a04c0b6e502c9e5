"""The write model: users, campaigns and refresh tokens, their invariants and the events they record."""
