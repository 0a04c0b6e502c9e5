"""`python -m launcher ...` is the `campaigns` command."""

from launcher.cli import app

app()
