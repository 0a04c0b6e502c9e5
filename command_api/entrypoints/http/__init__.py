"""The command API over HTTP (FastAPI)."""
