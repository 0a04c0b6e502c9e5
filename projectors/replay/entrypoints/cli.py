"""`campaigns replay`: rebuild, verify and drop generations; inspect an aggregate as it was.

Progress and notices go to stderr; reports (tables, JSON) to stdout.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from projectors.replay.application.ports import BusyError, LiveGenerationError, SourceUnavailable
from projectors.replay.application.rebuild import PlannedRebuild, RebuildReport
from projectors.replay.application.verify import VerifyReport
from projectors.replay.domain.plan import SourceName, UnknownProjection
from projectors.replay.domain.tally import ProjectionTally
from projectors.replay.domain.time_travel import AsOf, parse_moment
from projectors.replay.entrypoints.progress import RichProgress
from service_runtime import event_loop
from service_runtime.settings import get_settings

if TYPE_CHECKING:
    from projectors.replay.bootstrap import Replay

T = TypeVar("T")

DEFAULT_GRACE_SECONDS = 15.0
BATCH_SIZE = 500  # as the writer's own default (projectors.replay.adapters.redis_writer)

replay_app = typer.Typer(
    help="Rebuild projections from the event log, verify them, inspect an aggregate as it was.",
    no_args_is_help=True,
)

PROJECTION_HELP = "campaigns | users | stats | all"
SOURCE_HELP = "mongo: the events log (authoritative); kafka: the topics from their earliest offsets"
PROCESSES_HELP = (
    "with --source kafka: processes that read the full pass, each a part of the partitions "
    "(default CAMPAIGNS_REPLAY_PROCESSES, 2; passes under CAMPAIGNS_REPLAY_PARALLEL_MIN_EVENTS "
    "records use one)"
)


def _run(use: Callable[[Replay], Awaitable[T]]) -> T:
    """Run one use case on the real adapters; what an operator can act on becomes a message and exit 1."""
    # Imported here: the clients (Redis, MongoDB, Kafka) load only when a replay command runs.
    from projectors.replay.adapters.campaign_folder import GenerationMoved
    from projectors.replay.adapters.partitioned_pass import ShareFailed
    from projectors.replay.bootstrap import UNREACHABLE, replay

    settings = get_settings()

    async def run() -> T:
        async with replay(settings) as tools:
            return await use(tools)

    try:
        return event_loop.run(run(), settings.event_loop)
    except (BusyError, SourceUnavailable, LiveGenerationError, ShareFailed, GenerationMoved) as exc:
        raise _fail(str(exc)) from exc
    except UNREACHABLE as exc:
        raise _fail(f"a server did not answer ({type(exc).__name__}): {exc}") from exc


def _consoles() -> tuple[Console, Console]:
    return Console(), Console(stderr=True)


def _fail(message: str, code: int = 1) -> typer.Exit:
    Console(stderr=True).print(f"[red]{message}[/red]")
    return typer.Exit(code)


@replay_app.command("rebuild")
def rebuild_command(
    projection: str = typer.Argument(..., help=PROJECTION_HELP),
    source: SourceName = typer.Option(SourceName.MONGO, "--source", help=SOURCE_HELP),
    dry_run: bool = typer.Option(False, "--dry-run", help="count what would be rebuilt; write nothing"),
    grace_seconds: float = typer.Option(
        DEFAULT_GRACE_SECONDS,
        "--grace-seconds",
        min=0,
        help="how long the replaced generation stays readable before this command deletes it",
    ),
    batch_size: int = typer.Option(
        BATCH_SIZE, "--batch-size", min=1, help="events per pipelined Redis batch (one of 4 in flight)"
    ),
    processes: int | None = typer.Option(None, "--processes", min=1, max=64, help=PROCESSES_HELP),
) -> None:
    """Rebuild into a new generation beside the live one, catch up, swap, then drop the old one."""
    out, err = _consoles()
    try:
        if dry_run:
            plans = _run(lambda tools: tools.plan(projection, source))
            out.print(_plan_table(plans, source))
            return
        with RichProgress(err) as progress:
            report = _run(
                lambda tools: tools.rebuild(
                    projection, source, progress, grace_seconds, batch_size, processes
                )
            )
    except UnknownProjection as exc:
        raise _fail(str(exc), 2) from exc
    out.print(_rebuild_table(report))
    _warn(err, report.invalid, [(p.projection, p.tally) for p in report.projections])


@replay_app.command("verify")
def verify_command(
    projection: str = typer.Argument(..., help=PROJECTION_HELP),
    source: SourceName = typer.Option(SourceName.MONGO, "--source", help=SOURCE_HELP),
    processes: int | None = typer.Option(None, "--processes", min=1, max=64, help=PROCESSES_HELP),
) -> None:
    """Rebuild into a scratch generation, compare digests with the live one; exit 1 on drift."""
    out, err = _consoles()
    try:
        with RichProgress(err) as progress:
            report = _run(lambda tools: tools.verify(projection, source, progress, processes))
    except UnknownProjection as exc:
        raise _fail(str(exc), 2) from exc
    out.print(_verify_table(report))
    for checked in report.projections:
        if checked.diff is not None:
            out.print(f"[bold red]{checked.projection}[/bold red] ({checked.live_generation}) differs:")
            for line in checked.diff.lines():
                out.print(f"  {line}", markup=False)
    _warn(err, report.invalid, [(p.projection, p.tally) for p in report.projections])
    if report.drift:
        raise typer.Exit(1)


@replay_app.command("inspect")
def inspect_command(
    aggregate_id: str = typer.Argument(..., help="a campaign's or a user's id"),
    as_of_version: int | None = typer.Option(
        None, "--as-of-version", min=1, help="as it was at this version"
    ),
    as_of: str | None = typer.Option(
        None, "--as-of", help="as it was at this moment (ISO 8601; without an offset: UTC)"
    ),
) -> None:
    """The aggregate folded from the events log as it was, with its version and the events applied."""
    out, _ = _consoles()
    try:
        moment = parse_moment(as_of) if as_of is not None else None
        when = AsOf(version=as_of_version, moment=moment)
    except ValueError as exc:
        raise _fail(f"--as-of-version / --as-of: {exc}", 2) from exc
    inspection = _run(lambda tools: tools.inspect(aggregate_id, when))
    if inspection is None:
        raise _fail(f"no events for aggregate {aggregate_id}")
    out.print_json(data=inspection.as_json())
    if not inspection.applied:
        raise _fail(f"{inspection.aggregate_type} {aggregate_id} did not exist yet then")


@replay_app.command("drop")
def drop_command(generation: str = typer.Argument(..., help="e.g. campaigns.3")) -> None:
    """Delete a generation that is not live (one an interrupted rebuild or verify left behind)."""
    out, _ = _consoles()
    removed = _run(lambda tools: tools.drop(generation))
    out.print(f"{generation}: {removed} keys removed")


def _plan_table(plans: list[PlannedRebuild], source: SourceName) -> Table:
    table = Table(title=f"Dry run: nothing written (source: {source.value})")
    for column in ("projection", "live generation", "live keys", "would build", "events to read"):
        table.add_column(column)
    for plan in plans:
        table.add_row(
            plan.projection,
            plan.live_generation,
            f"{plan.live_keys:,}",
            plan.new_generation,
            f"{plan.events:,}",
        )
    return table


def _rebuild_table(report: RebuildReport) -> Table:
    table = Table(
        title=(
            f"Rebuilt from {report.source}: {report.events:,} events in {report.seconds:.1f} s "
            f"({report.events_per_second:,.0f} events/s), {report.passes} passes"
        )
    )
    for column in (
        "projection",
        "live generation",
        "applied",
        "already there",
        "parked",
        "refused",
        "old keys removed",
    ):
        table.add_column(column)
    for p in report.projections:
        table.add_row(
            p.projection,
            f"{p.old_generation} -> {p.new_generation}",
            f"{p.tally.applied:,}",
            f"{p.tally.duplicates:,}",
            f"{p.tally.parked:,}",
            f"{p.tally.refused:,}",
            f"{p.old_keys_removed:,}",
        )
    return table


def _verify_table(report: VerifyReport) -> Table:
    table = Table(title=f"Verified against a rebuild from {report.source} ({report.events:,} events)")
    for column in ("projection", "live generation", "live digest", "rebuilt digest", "result"):
        table.add_column(column)
    for p in report.projections:
        table.add_row(
            p.projection,
            p.live_generation,
            p.live_digest[:16],
            p.rebuilt_digest[:16],
            "[green]same[/green]" if p.matches else "[red]DRIFT[/red]",
        )
    return table


def _warn(err: Console, invalid: int, tallies: list[tuple[str, ProjectionTally]]) -> None:
    if invalid:
        err.print(f"[yellow]{invalid} records in the source are not valid events and were skipped[/yellow]")
    for projection, tally in tallies:
        if tally.refused:
            err.print(f"[yellow]{projection}: {tally.refused} events refused by the read model[/yellow]")
            for reason in tally.refusals:
                err.print(f"  {reason}", markup=False)
        if tally.parked:
            err.print(
                f"[yellow]{projection}: {tally.parked} events came before a missing version and were "
                "parked (applied once it arrives)[/yellow]"
            )
