"""`python -m service_runtime ...` is the `campaigns` command."""

from service_runtime.cli import app

app()
