"""`campaigns dlq`: list, show, re-drive and purge dead letters.

Reports (tables, JSON) go to stdout, prompts and notices to stderr. What an operator can act on
(an unknown topic, a bad ref, a server that does not answer) is one message and exit 1 (2 for a
bad argument).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from deadletters.application.operations import (
    ConfirmationRequired,
    PurgeReport,
    ReplayPlan,
    ReplayReport,
    TopicListing,
)
from deadletters.application.ports import UnknownTopic
from deadletters.domain.records import InvalidRef, NotADeadLetterTopic
from service_runtime import event_loop
from service_runtime.settings import get_settings

if TYPE_CHECKING:
    from deadletters.bootstrap import DeadLetterOperations

T = TypeVar("T")

dlq_app = typer.Typer(
    help="Dead letters: list them with counts per reason, show one, re-drive them, purge them.",
    no_args_is_help=True,
)

ACTOR_HELP = "who is acting, for the audit record (default: the OS user)"


def _out() -> Console:
    return Console(width=160)


def _err() -> Console:
    return Console(stderr=True, width=160)


def _fail(message: str, code: int = 1) -> typer.Exit:
    _err().print(f"[red]{message}[/red]", markup=True, highlight=False)
    return typer.Exit(code)


def _run(use: Callable[[DeadLetterOperations], Awaitable[T]]) -> T:
    # Imported here: the clients (MongoDB, Kafka) load only when a dlq command runs.
    from deadletters.bootstrap import UNREACHABLE, dead_letter_operations

    settings = get_settings()

    async def run() -> T:
        async with dead_letter_operations(settings) as dlq:
            return await use(dlq)

    try:
        return event_loop.run(run(), settings.event_loop)
    except (InvalidRef, NotADeadLetterTopic) as exc:
        raise _fail(str(exc), 2) from exc
    except (UnknownTopic, ConfirmationRequired) as exc:
        raise _fail(str(exc)) from exc
    except UNREACHABLE as exc:
        raise _fail(f"a server did not answer ({type(exc).__name__}): {exc}") from exc


def _ask(question: str) -> bool:
    """A prompt on stderr; no terminal to ask on means no."""
    if not sys.stdin.isatty():
        _err().print(f"{question} [no terminal to confirm on: pass --yes]", markup=False)
        return False
    return typer.confirm(question, default=False, err=True)


@dlq_app.command("list")
def list_command(
    topic: str | None = typer.Argument(None, help="a dead-letter topic (default: every one)"),
    aggregate: str | None = typer.Option(None, "--aggregate", help="only this aggregate's records"),
    show: int = typer.Option(50, "--show", min=0, help="records listed per topic (counts cover all)"),
) -> None:
    """Dead letters not purged, with counts per error type and per reason."""
    listings = _run(lambda dlq: dlq.list(topic, aggregate, show))
    out = _out()
    for listing in listings:
        out.print(_records_table(listing))
        out.print(_counts_table(listing))


@dlq_app.command("show")
def show_command(ref: str = typer.Argument(..., help="<dlq-topic>:<partition>:<offset>")) -> None:
    """One dead letter: its dlq_* headers, original headers and value."""
    shown = _run(lambda dlq: dlq.show(ref))
    if shown is None:
        raise _fail(f"no record at {ref}")
    letter = shown.letter
    value = letter.value or b""
    try:
        text: Any = value.decode("utf-8")
    except UnicodeDecodeError:
        text = value.hex()
    _out().print_json(
        data={
            "ref": str(letter.ref),
            "key": letter.key.decode("utf-8", "replace") if letter.key else None,
            "reason": letter.reason,
            "error_type": letter.error_type,
            "attempts": letter.attempts,
            "consumer_group": letter.consumer_group,
            "original": {
                "topic": letter.origin.topic,
                "partition": letter.origin.partition,
                "offset": letter.origin.offset,
            },
            "failed_at": letter.failed_at,
            "aggregate_id": letter.aggregate_id,
            "aggregate_version": letter.aggregate_version,
            "event_type": letter.event_type,
            "headers": {name: raw.decode("utf-8", "replace") for name, raw in letter.original_headers()},
            "value": text,
            "redriven": (
                {"at": str(shown.redrive.get("redriven_at")), "audit_id": shown.redrive.get("audit_id")}
                if shown.redrive
                else None
            ),
            "purged": shown.purged,
        }
    )


@dlq_app.command("replay")
def replay_command(
    topic: str = typer.Argument(..., help="the dead-letter topic, e.g. campaigns.events.dlq"),
    aggregate: str | None = typer.Option(None, "--aggregate", help="only this aggregate's records"),
    limit: int | None = typer.Option(None, "--limit", min=1, help="re-drive at most N records"),
    dry_run: bool = typer.Option(False, "--dry-run", help="name what would be re-driven; change nothing"),
    yes: bool = typer.Option(False, "--yes", help="no confirmation prompt above the threshold"),
    actor: str | None = typer.Option(None, "--actor", help=ACTOR_HELP),
) -> None:
    """Re-drive records to their consumers: back onto their original topic, each aggregate's in
    version order, in batches; audited; records already re-driven are skipped."""
    out, err = _out(), _err()

    async def confirm(plan: ReplayPlan) -> bool:
        return await asyncio.to_thread(
            _ask, f"Re-drive {len(plan.redrives)} records from {plan.topic} to {_targets(plan)}?"
        )

    report = _run(
        lambda dlq: dlq.replay(topic, aggregate, limit, dry_run, actor=actor, yes=yes, confirm=confirm)
    )
    for line in _plan_lines(report):
        out.print(line, markup=False, highlight=False, soft_wrap=True)
    if report.plan.already_redriven:
        err.print(f"{report.plan.already_redriven} records were re-driven before and are skipped")
    if report.plan.truncated:
        err.print("[yellow]more records are pending than one run plans: run replay again[/yellow]")
    if report.declined:
        raise _fail("not confirmed: nothing re-driven")
    if dry_run:
        out.print(f"Dry run: {len(report.plan.redrives)} records would be re-driven; nothing changed")
        return
    out.print(f"Re-drove {report.redriven} records ({report.settled} dead letters settled)")
    if report.audit_id:
        out.print(f"audit record: {report.audit_id}")
    if report.missing:
        err.print(f"[yellow]{len(report.missing)} records were gone (retention) and were skipped[/yellow]")


@dlq_app.command("purge")
def purge_command(
    topic: str = typer.Argument(..., help="the dead-letter topic, e.g. campaigns.events.dlq"),
    yes: bool = typer.Option(False, "--yes", help="no confirmation prompt"),
    actor: str | None = typer.Option(None, "--actor", help=ACTOR_HELP),
) -> None:
    """Mark every record now in the topic purged (list and replay skip them); audited. The records
    stay in Kafka until the topic's retention removes them."""

    async def confirm(records: int) -> bool:
        return await asyncio.to_thread(_ask, f"Purge {records} records of {topic}?")

    report: PurgeReport = _run(lambda dlq: dlq.purge(topic, actor=actor, yes=yes, confirm=confirm))
    if report.declined:
        raise _fail("not confirmed: nothing purged")
    if report.records == 0:
        _out().print(f"{topic}: nothing to purge")
        return
    _out().print(f"{topic}: {report.records} records purged (audit record: {report.audit_id})")


def _targets(plan: ReplayPlan) -> str:
    return ", ".join(sorted({r.origin.topic for r in plan.redrives}))


def _records_table(listing: TopicListing) -> Table:
    counts = listing.counts
    title = f"{listing.topic}: {counts.total} records, {counts.pending} pending, {counts.redriven} re-driven"
    table = Table(title=title)
    table.add_column("ref", no_wrap=True)
    for column in ("error type", "reason", "group", "aggregate", "version", "event type", "re-driven"):
        table.add_column(column, overflow="fold")
    for record in listing.records:
        s = record.summary
        table.add_row(
            str(s.ref),
            s.error_type,
            s.reason[:120],
            s.consumer_group or "",
            s.aggregate_id or "",
            "" if s.aggregate_version is None else str(s.aggregate_version),
            s.event_type or "",
            "yes" if record.redriven else "",
        )
    if counts.total > len(listing.records):
        table.caption = f"first {len(listing.records)} of {counts.total} (--show N for more)"
    return table


def _counts_table(listing: TopicListing) -> Table:
    table = Table(title=f"{listing.topic}: counts per reason")
    for column in ("error type", "reason", "records"):
        table.add_column(column, overflow="fold")
    for error_type, count in listing.counts.by_error_type.most_common():
        table.add_row(error_type, "(all)", str(count))
    for reason, count in listing.counts.by_reason.most_common():
        table.add_row("", reason, str(count))
    return table


def _plan_lines(report: ReplayReport) -> list[str]:
    """One line per record, in the order they go back (plain text: easy to grep and to diff)."""
    plan = report.plan
    verb = "would re-drive" if report.dry_run else "re-drive"
    lines = []
    for r in plan.redrives:
        version = "" if r.aggregate_version is None else f" v{r.aggregate_version}"
        copies = f" (also settles {', '.join(str(c) for c in r.copies)})" if r.copies else ""
        lines.append(
            f"{verb} {r.ref} -> {r.origin.topic}:{r.origin.partition}:{r.origin.offset} "
            f"aggregate {r.aggregate_id or '-'}{version}{copies}"
        )
    return lines
