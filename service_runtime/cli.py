"""The `campaigns` command: run the stack and the services, administer users, replay projections."""

from __future__ import annotations

import asyncio
import importlib
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from projectors.replay.entrypoints.cli import replay_app
from service_runtime.settings import DefaultSecretInProduction, get_settings

REPO = Path(__file__).resolve().parents[1]
STACK_SCRIPT = REPO / "infra" / "local" / "stack.py"

app = typer.Typer(help="Campaigns CQRS: run, administer and replay.", no_args_is_help=True)
stack_app = typer.Typer(help="The local stack of real servers (Redis, Kafka, MongoDB, SMTP sink).")
users_app = typer.Typer(help="User administration.")
app.add_typer(stack_app, name="stack")
app.add_typer(users_app, name="users")
app.add_typer(replay_app, name="replay")
keys_app = typer.Typer(help="Access-token signing keys (Ed25519).")
app.add_typer(keys_app, name="keys")

# Each long-running service: what `campaigns serve NAME` runs. ASGI apps run under uvicorn with
# several workers; the others are "module:function" coroutines run in this process.
ASGI_SERVICES: dict[str, tuple[str, str, str]] = {
    # name: (app factory, host setting, port setting)
    "command-api": ("command_api.entrypoints.http.app:create_app", "command_api_host", "command_api_port"),
    "query-api": ("query_api.entrypoints.http.app:create_app", "query_api_host", "query_api_port"),
}
ASYNC_SERVICES: dict[str, tuple[str, str]] = {
    # name: (coroutine function taking the settings, metrics port setting)
    "relay": ("command_api.entrypoints.relay:run", "relay_metrics_port"),
    "scheduler": ("command_api.entrypoints.scheduler:run", "scheduler_metrics_port"),
    "projectors": ("projectors.entrypoints.projectors:run", "projectors_metrics_port"),
    "workers": ("projectors.entrypoints.workers:run", "workers_metrics_port"),
}
SERVICES = [*ASGI_SERVICES, *ASYNC_SERVICES]


def _stack(action: str, servers: list[str]) -> int:
    return subprocess.call([sys.executable, str(STACK_SCRIPT), action, *servers], cwd=REPO)


@stack_app.command("up")
def stack_up(servers: list[str] = typer.Argument(None, help="redis, kafka, mongo, smtp")) -> None:
    """Start the servers that are not running and wait until each answers."""
    _ensure_keys()
    raise typer.Exit(_stack("up", servers or []))


@keys_app.command("generate")
def keys_generate(directory: Path = typer.Argument(..., help="where to write access-token.key/.pub")) -> None:
    """Write a new key pair (private key mode 0600) and print its kid; see README for rotation."""
    from service_runtime.keys import generate_key_pair

    typer.echo(f"kid {generate_key_pair(directory)} written to {directory}/")


def _ensure_keys() -> None:
    """A per-install access-token key pair under .local/keys/, unless keys are configured."""
    from service_runtime.keys import ensure_local_keys

    written = ensure_local_keys(get_settings())
    if written is not None:
        typer.echo(f"generated an access-token key pair in {written}/ (private key mode 0600)")


@stack_app.command("down")
def stack_down() -> None:
    """Stop exactly the servers `up` started."""
    raise typer.Exit(_stack("down", []))


@stack_app.command("status")
def stack_status() -> None:
    """Show which servers run and where they listen (exit 1 if any is down)."""
    raise typer.Exit(_stack("status", []))


def _load(target: str) -> Callable[..., Any]:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]


@app.command()
def serve(
    service: str = typer.Argument(..., help=" | ".join(SERVICES)),
    workers: int = typer.Option(None, help="uvicorn worker processes (APIs only)"),
) -> None:
    """Run one service in the foreground."""
    try:
        settings = get_settings()
    except DefaultSecretInProduction as exc:
        typer.echo(f"refusing to start {service}: {exc}", err=True)
        raise typer.Exit(2) from exc
    if service in ASGI_SERVICES:
        import uvicorn

        from service_runtime.keys import KeyUnavailable, signing_key, verification_keys

        try:  # the command API signs access tokens, the query API only verifies them
            signing_key(settings) if service == "command-api" else verification_keys(settings)
        except KeyUnavailable as exc:
            typer.echo(f"refusing to start {service}: {exc}", err=True)
            raise typer.Exit(2) from exc

        factory, host_key, port_key = ASGI_SERVICES[service]
        count = workers or settings.api_workers
        _prepare_multiprocess_metrics(service)
        uvicorn.run(
            factory,
            factory=True,
            host=getattr(settings, host_key),
            port=getattr(settings, port_key),
            workers=count,
            log_level="warning",
            access_log=False,
            lifespan="on",
            # X-Forwarded-For only from the configured proxies (never "*", never loopback by
            # default): a client that reaches the API directly cannot choose its address.
            proxy_headers=bool(settings.trusted_proxies),
            forwarded_allow_ips=settings.trusted_proxies or "",
        )
        return
    if service in ASYNC_SERVICES:
        target, metrics_port_key = ASYNC_SERVICES[service]
        # One process: its own registry, served on its own port (GET /metrics).
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        from prometheus_client import start_http_server

        port = getattr(settings, metrics_port_key)
        try:
            start_http_server(port, addr=settings.metrics_host)
        except OSError as exc:
            typer.echo(
                f"refusing to start {service}: its metrics port {settings.metrics_host}:{port} "
                f"is taken ({exc.strerror}); set CAMPAIGNS_{metrics_port_key.upper()}",
                err=True,
            )
            raise typer.Exit(2) from exc
        asyncio.run(_load(target)(settings))
        return
    typer.echo(f"unknown service {service!r}; one of: {', '.join(SERVICES)}", err=True)
    raise typer.Exit(2)


def _prepare_multiprocess_metrics(service: str) -> None:
    """prometheus-client's multiprocess mode: one fresh directory per API, shared by its workers."""
    default = REPO / get_settings().local_dir / "metrics" / service
    directory = Path(os.environ.get("PROMETHEUS_MULTIPROC_DIR") or default)
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)


@app.command()
def run(detach: bool = typer.Option(False, help="start in the background and return")) -> None:
    """Start the stack and every service; in the foreground, Ctrl-C stops them all."""
    _ensure_keys()
    code = _stack("up", [])
    if code:
        raise typer.Exit(code)
    from service_runtime.supervisor import Supervisor

    supervisor = Supervisor(REPO, get_settings(), SERVICES)
    if detach:
        supervisor.start_detached()
        supervisor.wait_healthy()
        return
    try:
        supervisor.run_foreground()
    finally:
        _stack("down", [])


@app.command()
def stop() -> None:
    """Stop every service started with `run --detach`, then the stack."""
    from service_runtime.supervisor import Supervisor

    Supervisor(REPO, get_settings(), SERVICES).stop_detached()
    raise typer.Exit(_stack("down", []))


@users_app.command("grant-admin")
def grant_admin(email: str) -> None:
    """Make the user with this e-mail an admin (records UserRolesChanged)."""
    grant = _load("command_api.entrypoints.admin:grant_admin")
    try:
        message = asyncio.run(grant(get_settings(), email))
    except LookupError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from exc
    typer.echo(message)
