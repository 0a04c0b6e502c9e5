"""How the write side is driven: HTTP routes, the relay process and the admin CLI command."""
