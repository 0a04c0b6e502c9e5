"""The `campaigns` command: run the stack and the services, administer users, replay projections.

The services are imported only by the command that runs them (`_load`, or inside the command),
so this module loads none of them.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import subprocess
import sys
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Any

import typer

from service_runtime import event_loop
from service_runtime.processes import wait_through_interrupts
from service_runtime.settings import (
    RELAY_QUARANTINED_LISTED_MAX,
    DefaultSecretInProduction,
    Settings,
    get_settings,
)

REPO = Path(__file__).resolve().parents[1]
STACK_SCRIPT = REPO / "infra" / "local" / "stack.py"

app = typer.Typer(help="Campaigns CQRS: run, administer and replay.", no_args_is_help=True)
stack_app = typer.Typer(help="The local stack of real servers (Redis, Kafka, MongoDB, SMTP sink).")
users_app = typer.Typer(help="User administration.")
app.add_typer(stack_app, name="stack")
app.add_typer(users_app, name="users")
keys_app = typer.Typer(help="Access-token signing keys (Ed25519).")
app.add_typer(keys_app, name="keys")
relay_app = typer.Typer(
    help="The outbox relay: the events it quarantined, and sending one again.", no_args_is_help=True
)
app.add_typer(relay_app, name="relay")

# Each long-running service: what `campaigns serve NAME` runs. ASGI apps run under uvicorn with
# several workers; the others are "module:function" coroutines run in this process.
ASGI_SERVICES: dict[str, tuple[str, str, str]] = {
    # name: (app factory, host setting, port setting)
    "command-api": ("command_api.entrypoints.http.app:create_app", "command_api_host", "command_api_port"),
    "query-api": ("query_api.entrypoints.http.app:create_app", "query_api_host", "query_api_port"),
}
ASGI_METRICS_PORTS = {"command-api": "command_api_metrics_port", "query-api": "query_api_metrics_port"}
ASYNC_SERVICES: dict[str, tuple[str, str]] = {
    # name: (coroutine function taking the settings, metrics port setting)
    "relay": ("command_api.entrypoints.relay:run", "relay_metrics_port"),
    "scheduler": ("command_api.entrypoints.scheduler:run", "scheduler_metrics_port"),
    "projectors": ("projectors.entrypoints.projectors:run", "projectors_metrics_port"),
    "workers": ("workers.entrypoints.workers:run", "workers_metrics_port"),
}
SERVICES = [*ASGI_SERVICES, *ASYNC_SERVICES]


def _stack(action: str, servers: list[str], *options: str) -> int:
    process = subprocess.Popen([sys.executable, str(STACK_SCRIPT), action, *servers, *options], cwd=REPO)
    return wait_through_interrupts(process)


@stack_app.command("up")
def stack_up(
    servers: list[str] = typer.Argument(None, help="redis, kafka, mongo, smtp, or a node: kafka-2"),
) -> None:
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
def stack_status(
    as_json: bool = typer.Option(False, "--json", help="every server, service, pid and the topology"),
) -> None:
    """Show which servers run and where they listen (exit 1 if any is down)."""
    raise typer.Exit(_stack("status", [], *(["--json"] if as_json else [])))


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
        from service_runtime.keys import KeyUnavailable, signing_key, verification_keys

        try:  # the command API signs access tokens, the query API only verifies them
            signing_key(settings) if service == "command-api" else verification_keys(settings)
        except KeyUnavailable as exc:
            typer.echo(f"refusing to start {service}: {exc}", err=True)
            raise typer.Exit(2) from exc

        factory, host_key, port_key = ASGI_SERVICES[service]
        _prepare_multiprocess_metrics(service)
        metrics_key = ASGI_METRICS_PORTS[service]
        config = {
            "service": service,
            "factory": factory,
            "host": getattr(settings, host_key),
            "port": getattr(settings, port_key),
            "workers": workers or settings.api_workers,
            "loop": event_loop.loop_in_use(settings.event_loop),
            "gc_young_threshold": settings.gc_young_threshold,
            "metrics_host": settings.metrics_host,
            "metrics_port": getattr(settings, metrics_key),
            "metrics_setting": f"CAMPAIGNS_{metrics_key.upper()}",
            # No client frame is bigger than the monitor's auth message: a bigger one is refused
            # by the protocol layer (1009) before anything parses it.
            "ws_max_size": settings.monitor_first_frame_bytes,
            "timeout_keep_alive": settings.http_keep_alive_seconds,
            # X-Forwarded-For only from the configured proxies (never "*", never loopback by
            # default): a client that reaches the API directly cannot choose its address.
            "proxy_headers": bool(settings.trusted_proxies),
            "forwarded_allow_ips": settings.trusted_proxies or "",
        }
        # The supervisor needs none of what was imported to check the settings and keys: it
        # becomes a lean process of its own (same pid, same environment; see asgi_server).
        sys.stdout.flush()
        sys.stderr.flush()
        argv = [sys.executable, "-m", "launcher.asgi_server", json.dumps(config)]
        os.execv(sys.executable, argv)  # noqa: S606 (our own interpreter, fixed arguments)
    if service in ASYNC_SERVICES:
        target, metrics_port_key = ASYNC_SERVICES[service]
        # One process: its own registry, served on its own port (GET /metrics).
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        from prometheus_client import start_http_server

        _serve_metrics(
            service,
            settings,
            metrics_port_key,
            lambda port: start_http_server(port, addr=settings.metrics_host),
        )
        main = _load(target)
        event_loop.settle_heap(settings.gc_young_threshold)
        event_loop.run(main(settings), settings.event_loop)
        return
    typer.echo(f"unknown service {service!r}; one of: {', '.join(SERVICES)}", err=True)
    raise typer.Exit(2)


def _serve_metrics(service: str, settings: Settings, port_key: str, start: Callable[[int], object]) -> None:
    port = getattr(settings, port_key)
    try:
        start(port)
    except OSError as exc:
        typer.echo(
            f"refusing to start {service}: its metrics port {settings.metrics_host}:{port} "
            f"is taken ({exc.strerror}); set CAMPAIGNS_{port_key.upper()}",
            err=True,
        )
        raise typer.Exit(2) from exc


def _prepare_multiprocess_metrics(service: str) -> None:
    """prometheus-client's multiprocess mode: one fresh directory per API, shared by its workers."""
    default = REPO / get_settings().local_dir / "metrics" / service
    directory = Path(os.environ.get("PROMETHEUS_MULTIPROC_DIR") or default)
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)


def console_defaults(settings: Settings, environ: MutableMapping[str, str]) -> None:
    """Locally, the console (the query API's /monitor) may sign in on the command API (CORS) from
    the query API's own origin, unless CAMPAIGNS_CONSOLE_ORIGINS says otherwise."""
    port = settings.query_api_port
    environ.setdefault("CAMPAIGNS_CONSOLE_ORIGINS", f"http://127.0.0.1:{port},http://localhost:{port}")
    environ.setdefault("CAMPAIGNS_COMMAND_API_PUBLIC_URL", f"http://127.0.0.1:{settings.command_api_port}")


@app.command()
def run(detach: bool = typer.Option(False, help="start in the background and return")) -> None:
    """Start the stack and every service; in the foreground, Ctrl-C stops them all.

    If a server or service fails to start, everything already started is stopped again."""
    _ensure_keys()
    from launcher.supervisor import Supervisor

    settings = get_settings()
    console_defaults(settings, os.environ)
    supervisor = Supervisor(REPO, settings, SERVICES)

    def stack(action: str) -> int:
        return _stack(action, [])

    if detach:
        raise typer.Exit(supervisor.start_with_stack(stack))
    raise typer.Exit(supervisor.run_with_stack(stack))


@app.command()
def stop() -> None:
    """Stop every service started with `run --detach`, then the stack."""
    from launcher.supervisor import Supervisor

    Supervisor(REPO, get_settings(), SERVICES).stop_detached()
    raise typer.Exit(_stack("down", []))


# The tools with a CLI of their own: everything after their name (options and --help included)
# goes to it, imported only when one of them runs.
_FORWARD = {"allow_extra_args": True, "ignore_unknown_options": True}


def _forward(ctx: typer.Context, target: str, name: str) -> None:
    tool: typer.Typer = _load(target)  # type: ignore[assignment]
    typer.main.get_command(tool).main(args=ctx.args, prog_name=f"campaigns {name}")


@app.command(
    "replay",
    context_settings=_FORWARD,
    add_help_option=False,
    help="Rebuild projections from the event log, verify them, inspect an aggregate as it was.",
)
def replay(ctx: typer.Context) -> None:
    _forward(ctx, "projectors.replay.entrypoints.cli:replay_app", "replay")


@app.command(
    "dlq",
    context_settings=_FORWARD,
    add_help_option=False,
    help="Dead letters: list them with counts per reason, show one, re-drive them, purge them.",
)
def dlq(ctx: typer.Context) -> None:
    _forward(ctx, "deadletters.entrypoints.cli:dlq_app", "dlq")


@app.command("kafka", context_settings=_FORWARD, add_help_option=False, help="Kafka topics: show, reconcile.")
def kafka(ctx: typer.Context) -> None:
    _forward(ctx, "service_runtime.kafka_cli:kafka_app", "kafka")


@users_app.command("grant-admin")
def grant_admin(email: str) -> None:
    """Make the user with this e-mail an admin (records UserRolesChanged)."""
    _administer("command_api.entrypoints.admin:grant_admin", email)


@users_app.command("revoke-admin")
def revoke_admin(email: str) -> None:
    """Take the admin role from the user with this e-mail (records UserRolesChanged); their access
    tokens end within seconds, and the next refresh carries the roles they have now."""
    _administer("command_api.entrypoints.admin:revoke_admin", email)


@relay_app.command("resend")
def relay_resend(
    event_id: str = typer.Argument(..., help="the event's id (its _id in the events log)"),
) -> None:
    """Send one event of the events log to Kafka again and lift its quarantine.

    For a quarantined event whose document is fixed; consumers drop a version they already have."""
    _administer("command_api.entrypoints.relay_tools:resend", event_id)


@relay_app.command("quarantined")
def relay_quarantined(
    limit: int | None = typer.Option(
        None,
        min=1,
        max=RELAY_QUARANTINED_LISTED_MAX,
        help="list at most this many (CAMPAIGNS_RELAY_QUARANTINED_LISTED, 100)",
    ),
    as_json: bool = typer.Option(False, "--json", help="one JSON document: total and events"),
) -> None:
    """List the events the relay quarantined (Kafka can never take them), oldest first, with why."""
    listing = _load("command_api.entrypoints.relay_tools:quarantined")
    settings = get_settings()
    try:
        events, total = asyncio.run(listing(settings, limit or settings.relay_quarantined_listed))
    except ConnectionError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from exc
    if as_json:
        typer.echo(json.dumps({"total": total, "events": events}, indent=2))
        return
    for event in events:
        typer.echo(
            f"{event['event_id']}  {event['aggregate_type']} {event['aggregate_id']} "
            f"v{event['aggregate_version']} {event['event_type']}  {event['bytes']} B  "
            f"{event['kind']} since {event['quarantined_at']}: {str(event['reason'])[:300]}"
        )
    typer.echo(quarantined_summary(total, len(events)))
    if events:
        typer.echo("fix each in the events log, then: campaigns relay resend <event-id>")


def quarantined_summary(total: int, listed: int) -> str:
    """The listing's last line: how many there are, and the `--limit` that lists more (at most
    the option's maximum) when some were left out."""
    if total <= listed:
        return f"{total} quarantined event(s)"
    if total <= RELAY_QUARANTINED_LISTED_MAX:
        return f"{total} quarantined event(s); --limit {total} lists them all"
    return (
        f"{total} quarantined event(s); --limit {RELAY_QUARANTINED_LISTED_MAX} lists the oldest "
        f"{RELAY_QUARANTINED_LISTED_MAX:,}"
    )


def _administer(target: str, argument: str) -> None:
    """Run one administrative coroutine; what it refused (no such user or event, an event that
    still cannot be sent, a server that did not answer) goes to stderr with exit status 1."""
    act = _load(target)
    try:
        message = asyncio.run(act(get_settings(), argument))
    except (LookupError, ValueError, ConnectionError) as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from exc
    typer.echo(message)
