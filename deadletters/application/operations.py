"""The dead-letter use cases: list, show, plan and run a re-drive, purge.

Re-driving produces a dead letter's original value, key and headers back onto its original
topic, so every consumer group of that topic reads it again. That is safe because every consumer
is idempotent: the projections apply an event only above the aggregate's stored version (inside
the same atomic Redis operation), and the workers keep a send record per event, so a group that
had already handled the record changes nothing, and the group that failed on it gets another
chance. It is also why re-driving is at least once: refs are marked re-driven in MongoDB after
Kafka acknowledged the batch, so a crash in between re-drives that batch again on the next run.

Memory stays bounded: scans read pages; a replay plan keeps summaries (no values) of at most
`max_records` records, and values are fetched one batch at a time.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from deadletters.application.ports import AuditEntry, DeadLetterLog, Ledger, Redriver
from deadletters.domain.counts import ReasonCounts
from deadletters.domain.records import DeadLetter, DeadLetterSummary, RecordRef, require_dlq_topic
from deadletters.domain.redrive_order import Redrive, order_for_redrive

# Refs kept in one audit record (a MongoDB document is at most 16 MB); the count is always exact.
AUDIT_REFS = 1000

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class ConfirmationRequired(RuntimeError):
    """An operation above the confirmation threshold was asked for without a confirmation."""


@dataclass(frozen=True)
class ListedRecord:
    summary: DeadLetterSummary
    redriven: bool


@dataclass
class TopicListing:
    topic: str
    counts: ReasonCounts = field(default_factory=ReasonCounts)
    records: list[ListedRecord] = field(default_factory=list)


def _matches(letter: DeadLetter, aggregate: str | None) -> bool:
    return aggregate is None or letter.aggregate_id == aggregate


async def list_dead_letters(
    log: DeadLetterLog, ledger: Ledger, topic: str, aggregate: str | None, show: int
) -> TopicListing:
    """Counts of every record not purged (or of one aggregate's), and the first `show` of them."""
    listing = TopicListing(require_dlq_topic(topic))
    async for page in log.scan(topic, await ledger.purged_below(topic)):
        letters = [letter for letter in page if _matches(letter, aggregate)]
        redriven = await ledger.redriven([letter.ref for letter in letters])
        for letter in letters:
            summary = letter.summary()
            done = letter.ref in redriven
            listing.counts.add(summary.error_type, summary.reason, redriven=done)
            if len(listing.records) < show:
                listing.records.append(ListedRecord(summary, done))
    return listing


@dataclass(frozen=True)
class ShownRecord:
    letter: DeadLetter
    redrive: dict[str, Any] | None
    purged: bool


async def show_dead_letter(log: DeadLetterLog, ledger: Ledger, ref: RecordRef) -> ShownRecord | None:
    found = (await log.fetch([ref])).get(ref)
    if found is None:
        return None
    purged_below = (await ledger.purged_below(ref.topic)).get(ref.partition, 0)
    return ShownRecord(found, await ledger.redrive_of(ref), ref.offset < purged_below)


@dataclass
class ReplayPlan:
    topic: str
    aggregate: str | None
    limit: int | None
    redrives: list[Redrive]
    already_redriven: int = 0
    # The scan stopped at `max_records` pending records: more remain for another run.
    truncated: bool = False

    @property
    def records(self) -> int:
        """Dead letters this plan settles (copies of one original record included)."""
        return sum(len(r.refs) for r in self.redrives)


async def plan_replay(
    log: DeadLetterLog,
    ledger: Ledger,
    topic: str,
    aggregate: str | None,
    limit: int | None,
    max_records: int,
) -> ReplayPlan:
    require_dlq_topic(topic)
    pending: list[DeadLetterSummary] = []
    already = 0
    truncated = False
    async for page in log.scan(topic, await ledger.purged_below(topic)):
        letters = [letter for letter in page if _matches(letter, aggregate)]
        redriven = await ledger.redriven([letter.ref for letter in letters])
        already += len(redriven)
        for letter in letters:
            if letter.ref in redriven:
                continue
            if len(pending) >= max_records:
                truncated = True
                break
            pending.append(letter.summary())
        if truncated:
            break
    return ReplayPlan(topic, aggregate, limit, order_for_redrive(pending, limit), already, truncated)


@dataclass
class ReplayReport:
    plan: ReplayPlan
    dry_run: bool
    redriven: int = 0  # records produced back
    settled: int = 0  # dead letters marked re-driven (copies included)
    missing: list[RecordRef] = field(default_factory=list)  # gone past retention meanwhile
    audit_id: str | None = None
    declined: bool = False


Confirm = Callable[[ReplayPlan], Awaitable[bool]]


def _chunks(items: Sequence[Redrive], size: int) -> list[Sequence[Redrive]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


async def replay(
    log: DeadLetterLog,
    redriver: Redriver,
    ledger: Ledger,
    plan: ReplayPlan,
    *,
    actor: str,
    dry_run: bool,
    batch_size: int,
    confirm_above: int,
    confirm: Confirm | None,
    clock: Clock = utc_now,
) -> ReplayReport:
    """Re-drive the plan in batches; above `confirm_above` records `confirm` must say yes first
    (None: refuse). A dry run changes nothing and writes no audit record."""
    report = ReplayReport(plan, dry_run)
    if dry_run or not plan.redrives:
        return report
    if len(plan.redrives) > confirm_above:
        if confirm is None:
            raise ConfirmationRequired(
                f"{len(plan.redrives)} records to re-drive, more than the {confirm_above} that "
                "need no confirmation"
            )
        if not await confirm(plan):
            report.declined = True
            return report
    audit_id = await ledger.open_audit(
        AuditEntry(
            "replay",
            actor,
            plan.topic,
            clock(),
            {
                "aggregate": plan.aggregate,
                "limit": plan.limit,
                "planned": len(plan.redrives),
                "refs": [str(ref) for r in plan.redrives[:AUDIT_REFS] for ref in r.refs][:AUDIT_REFS],
                "refs_truncated": plan.records > AUDIT_REFS,
            },
        )
    )
    report.audit_id = audit_id
    try:
        for batch in _chunks(plan.redrives, batch_size):
            fetched = await log.fetch([r.ref for r in batch])
            present = [r for r in batch if r.ref in fetched]
            report.missing += [r.ref for r in batch if r.ref not in fetched]
            await redriver.produce([fetched[r.ref] for r in present])
            settled = [ref for r in present for ref in r.refs]
            await ledger.mark_redriven(settled, audit_id, clock())
            report.redriven += len(present)
            report.settled += len(settled)
    except BaseException as exc:
        await ledger.close_audit(audit_id, f"failed: {type(exc).__name__}: {exc}", _counts(report), clock())
        raise
    await ledger.close_audit(audit_id, "ok", _counts(report), clock())
    return report


def _counts(report: ReplayReport) -> dict[str, Any]:
    return {
        "redriven": report.redriven,
        "settled": report.settled,
        "missing": [str(ref) for ref in report.missing[:AUDIT_REFS]],
        "already_redriven": report.plan.already_redriven,
    }


@dataclass
class PurgeReport:
    topic: str
    records: int  # records newly purged
    below: dict[int, int]
    audit_id: str | None = None
    declined: bool = False


async def purge(
    log: DeadLetterLog,
    ledger: Ledger,
    topic: str,
    *,
    actor: str,
    confirm: Callable[[int], Awaitable[bool]] | None,
    clock: Clock = utc_now,
) -> PurgeReport:
    """Mark every record now in the topic purged: list and replay skip them from then on. The
    records stay in Kafka until its retention removes them. Always asks `confirm` (None: refuse)."""
    require_dlq_topic(topic)
    ends = await log.end_offsets(topic)
    before = await ledger.purged_below(topic)
    records = sum(max(0, end - before.get(partition, 0)) for partition, end in ends.items())
    report = PurgeReport(topic, records, ends)
    if records == 0:
        return report
    if confirm is None:
        raise ConfirmationRequired(f"purging {records} records of {topic} needs a confirmation")
    if not await confirm(records):
        report.declined = True
        return report
    marks = {p: max(end, before.get(p, 0)) for p, end in ends.items()}
    audit_id = await ledger.open_audit(
        AuditEntry("purge", actor, topic, clock(), {"records": records, "below": _str_keys(marks)})
    )
    report.audit_id = audit_id
    try:
        await ledger.mark_purged(topic, marks, audit_id)
    except BaseException as exc:
        await ledger.close_audit(audit_id, f"failed: {type(exc).__name__}: {exc}", {}, clock())
        raise
    await ledger.close_audit(audit_id, "ok", {"purged": records}, clock())
    return report


def _str_keys(offsets: dict[int, int]) -> dict[str, int]:
    return {str(p): o for p, o in sorted(offsets.items())}
