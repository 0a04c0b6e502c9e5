"""`campaigns kafka topics [--reconcile] [--json]`: the system's topics against the settings."""

from __future__ import annotations

import asyncio
import json

import typer

from service_runtime.kafka_topics import Expected, TopicState, problems, reconcile_topics
from service_runtime.settings import get_settings

kafka_app = typer.Typer(help="Kafka administration: the system's topics.", no_args_is_help=True)


@kafka_app.callback()
def kafka() -> None:
    """Kafka administration (a group, so `topics` stays a subcommand as more are added)."""


def _line(state: TopicState) -> str:
    if not state.exists:
        return f"{state.name:<40} missing"
    return (
        f"{state.name:<40} partitions={state.partitions} replication={state.replication_factor} "
        f"min.insync.replicas={state.min_insync_replicas}"
    )


@kafka_app.command()
def topics(
    reconcile: bool = typer.Option(
        False, "--reconcile", help="create missing topics, grow partitions to the setting, set min ISR"
    ),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
) -> None:
    """Show the topics with their partitions and replication; exit 1 while they differ from the settings."""
    settings = get_settings()
    expected = Expected.of(settings)
    todo, states = asyncio.run(reconcile_topics(settings, apply=reconcile))
    remaining = problems(expected, states)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "expected": {
                        "partitions": expected.partitions,
                        "replication_factor": expected.replication_factor,
                        "min_insync_replicas": expected.min_insync_replicas,
                    },
                    "topics": [state.as_dict() for state in states],
                    "plan": {"create": todo.create, "grow": todo.grow, "set_min_isr": todo.set_min_isr},
                    "applied": reconcile,
                    "problems": remaining + todo.refused,
                },
                indent=2,
            )
        )
    else:
        typer.echo(
            f"expected: partitions={expected.partitions} replication={expected.replication_factor} "
            f"min.insync.replicas={expected.min_insync_replicas}"
        )
        for state in states:
            typer.echo(_line(state))
        verb = "done" if reconcile else "to do (--reconcile)"
        for name in todo.create:
            typer.echo(f"{verb}: create {name}")
        for name, count in todo.grow.items():
            typer.echo(f"{verb}: grow {name} to {count} partitions")
        for name in todo.set_min_isr:
            typer.echo(f"{verb}: set min.insync.replicas={expected.min_insync_replicas} on {name}")
        for message in todo.refused:
            typer.echo(f"left to an operator: {message}", err=True)
    if remaining or todo.refused or (not reconcile and not todo.empty):
        raise typer.Exit(1)
