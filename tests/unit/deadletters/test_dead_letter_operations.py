"""Dead-letter use cases on in-memory ports: reading the contract, order, once-only, confirmation, audit."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from deadletters.application import operations
from deadletters.application.operations import ConfirmationRequired, ReplayPlan
from deadletters.domain.counts import MAX_DISTINCT_REASONS, OTHER_REASONS, ReasonCounts
from deadletters.domain.records import DeadLetter, InvalidRef, NotADeadLetterTopic, RecordRef
from events.dead_letters import DeadLetterOrigin, dead_letter_headers
from tests.unit.deadletters.fakes import FakeLedger, FakeLog, FakeRedriver

DLQ = "campaigns.events.dlq"
WHEN = datetime(2027, 3, 1, tzinfo=UTC)


def letter(
    offset: int,
    aggregate: str,
    version: int | None,
    *,
    origin_offset: int | None = None,
    group: str = "projector.campaigns",
    error_type: str = "invalid",
    reason: str = "payload.name: too long",
    partition: int = 0,
) -> DeadLetter:
    value = (
        orjson.dumps(
            {"aggregate_id": aggregate, "aggregate_version": version, "event_type": "CampaignUpdated"}
        )
        if version is not None
        else b"{not json"
    )
    original = {"correlation_id": f"c-{offset}"}
    headers = dead_letter_headers(
        original,
        DeadLetterOrigin("campaigns.events", 1, offset if origin_offset is None else origin_offset, group),
        reason=reason,
        error_type=error_type,
        attempts=3,
        failed_at=WHEN,
    )
    return DeadLetter(
        RecordRef(DLQ, partition, offset),
        aggregate.encode(),
        value,
        tuple((k, v.encode()) for k, v in headers.items()),
    )


async def run_replay(
    log: FakeLog,
    ledger: FakeLedger,
    redriver: FakeRedriver,
    *,
    aggregate: str | None = None,
    limit: int | None = None,
    dry_run: bool = False,
    confirm_above: int = 100,
    answer: bool | None = None,
) -> operations.ReplayReport:
    plan = await operations.plan_replay(log, ledger, DLQ, aggregate, limit, max_records=1000)

    async def confirm(_: ReplayPlan) -> bool:
        assert answer is not None
        return answer

    return await operations.replay(
        log,
        redriver,
        ledger,
        plan,
        actor="ops@example",
        dry_run=dry_run,
        batch_size=2,
        confirm_above=confirm_above,
        confirm=None if answer is None else confirm,
        clock=lambda: WHEN,
    )


def test_a_dead_letter_reads_back_the_contract_headers_and_its_original_headers() -> None:
    dead = letter(5, "camp-1", 3, origin_offset=40)
    assert dead.reason == "payload.name: too long"
    assert dead.error_type == "invalid" and dead.attempts == 3
    assert dead.consumer_group == "projector.campaigns"
    assert (dead.origin.topic, dead.origin.partition, dead.origin.offset) == ("campaigns.events", 1, 40)
    assert dead.failed_at == "2027-03-01T00:00:00.000+00:00"
    assert (dead.aggregate_id, dead.aggregate_version, dead.event_type) == ("camp-1", 3, "CampaignUpdated")
    assert dead.original_headers() == [("correlation_id", b"c-5")]


def test_a_dead_letter_written_before_the_contract_keeps_its_reason_and_origin() -> None:
    legacy = DeadLetter(RecordRef(DLQ, 0, 1), b"k", b"{not json", (("dlq_error", b"not JSON"),))
    assert legacy.reason == "not JSON" and legacy.error_type == "unknown"
    assert legacy.origin.topic == "campaigns.events" and legacy.origin.offset is None
    assert legacy.aggregate_id == "k" and legacy.aggregate_version is None


def test_refs_are_parsed_back_and_refused_when_not_on_a_dead_letter_topic() -> None:
    ref = RecordRef("t1.campaigns.events.dlq", 3, 42)
    assert RecordRef.parse(str(ref)) == ref
    for bad in ("campaigns.events:0:1", "campaigns.events.dlq:x:1", "campaigns.events.dlq:1", ""):
        with pytest.raises(InvalidRef):
            RecordRef.parse(bad)


def test_reason_counts_stay_bounded_however_many_distinct_reasons() -> None:
    counts = ReasonCounts()
    for i in range(MAX_DISTINCT_REASONS + 50):
        counts.add("invalid", f"reason {i}", redriven=i % 2 == 0)
    assert counts.total == MAX_DISTINCT_REASONS + 50
    assert len(counts.by_reason) == MAX_DISTINCT_REASONS + 1
    assert counts.by_reason[OTHER_REASONS] == 50
    assert counts.pending == counts.total - counts.redriven


async def test_list_counts_every_record_per_reason_but_lists_only_the_first_few() -> None:
    log = FakeLog(
        [letter(i, f"camp-{i}", 1, error_type="invalid" if i % 3 else "unknown_type") for i in range(7)]
    )
    listing = await operations.list_dead_letters(log, FakeLedger(), DLQ, None, show=3)
    assert listing.counts.total == 7
    assert listing.counts.by_error_type == {"invalid": 4, "unknown_type": 3}
    assert [r.summary.ref.offset for r in listing.records] == [0, 1, 2]


async def test_list_of_one_aggregate_and_a_topic_that_is_not_a_dead_letter_topic() -> None:
    log = FakeLog([letter(0, "a", 1), letter(1, "b", 1), letter(2, "a", 2)])
    listing = await operations.list_dead_letters(log, FakeLedger(), DLQ, "a", show=10)
    assert [r.summary.ref.offset for r in listing.records] == [0, 2]
    with pytest.raises(NotADeadLetterTopic):
        await operations.list_dead_letters(log, FakeLedger(), "campaigns.events", None, show=10)


async def test_each_aggregate_goes_back_in_version_order_and_each_original_record_once() -> None:
    log = FakeLog(
        [
            letter(0, "a", 3, origin_offset=12),
            letter(1, "b", 1, origin_offset=20),
            letter(2, "a", 1, origin_offset=10),
            # The stats projection dead-lettered the same original record as offset 0.
            letter(3, "a", 3, origin_offset=12, group="projector.stats"),
            letter(4, "a", 2, origin_offset=11),
        ]
    )
    ledger, redriver = FakeLedger(), FakeRedriver()

    report = await run_replay(log, ledger, redriver)

    assert [(d.aggregate_id, d.aggregate_version) for d in redriver.produced] == [
        ("a", 1),
        ("a", 2),
        ("a", 3),
        ("b", 1),
    ]
    assert report.redriven == 4 and report.settled == 5
    assert set(ledger.marks) == {r.ref for r in log.records}
    assert all(len(batch) <= 2 for batch in log.fetches), "values are fetched a batch at a time"


async def test_a_second_replay_re_drives_nothing_and_a_dry_run_changes_nothing() -> None:
    log = FakeLog([letter(0, "a", 1), letter(1, "a", 2)])
    ledger, redriver = FakeLedger(), FakeRedriver()

    dry = await run_replay(log, ledger, redriver, dry_run=True)
    assert len(dry.plan.redrives) == 2
    assert redriver.produced == [] and ledger.marks == {} and ledger.audits == {}

    first = await run_replay(log, ledger, redriver)
    second = await run_replay(log, ledger, redriver)
    assert first.redriven == 2
    assert second.redriven == 0 and second.plan.redrives == [] and second.plan.already_redriven == 2
    assert len(redriver.produced) == 2
    assert len(ledger.audits) == 1


async def test_the_audit_record_says_who_re_drove_what_and_how_it_ended() -> None:
    log = FakeLog([letter(0, "a", 1), letter(1, "b", 1)])
    ledger = FakeLedger()
    report = await run_replay(log, ledger, FakeRedriver(), aggregate="b")
    assert report.audit_id is not None
    audit = ledger.audits[report.audit_id]
    assert audit["action"] == "replay" and audit["actor"] == "ops@example" and audit["topic"] == DLQ
    assert audit["aggregate"] == "b" and audit["refs"] == [f"{DLQ}:0:1"]
    assert audit["result"] == "ok" and audit["redriven"] == 1


async def test_a_failed_re_drive_is_audited_as_failed_and_unmarked_records_stay_pending() -> None:
    class BrokenRedriver(FakeRedriver):
        async def produce(self, letters: object) -> None:
            raise ConnectionError("kafka went away")

    log = FakeLog([letter(0, "a", 1)])
    ledger = FakeLedger()
    with pytest.raises(ConnectionError):
        await run_replay(log, ledger, BrokenRedriver())
    (audit,) = ledger.audits.values()
    assert audit["result"].startswith("failed: ConnectionError") and ledger.marks == {}


async def test_limit_bounds_the_records_re_driven() -> None:
    log = FakeLog([letter(i, "a", i + 1) for i in range(5)])
    redriver = FakeRedriver()
    report = await run_replay(log, FakeLedger(), redriver, limit=2)
    assert [d.aggregate_version for d in redriver.produced] == [1, 2] and report.redriven == 2


async def test_above_the_threshold_a_replay_needs_a_yes() -> None:
    log = FakeLog([letter(i, f"c{i}", 1) for i in range(3)])
    ledger, redriver = FakeLedger(), FakeRedriver()
    with pytest.raises(ConfirmationRequired):
        await run_replay(log, ledger, redriver, confirm_above=2)
    declined = await run_replay(log, ledger, redriver, confirm_above=2, answer=False)
    assert declined.declined and redriver.produced == [] and ledger.audits == {}
    accepted = await run_replay(log, ledger, redriver, confirm_above=2, answer=True)
    assert accepted.redriven == 3


async def test_purge_asks_marks_every_record_and_is_audited() -> None:
    log = FakeLog([letter(0, "a", 1), letter(1, "b", 1), letter(0, "c", 1, partition=2)])
    ledger = FakeLedger()

    async def no(_: int) -> bool:
        return False

    async def yes(_: int) -> bool:
        return True

    with pytest.raises(ConfirmationRequired):
        await operations.purge(log, ledger, DLQ, actor="ops", confirm=None)
    assert (await operations.purge(log, ledger, DLQ, actor="ops", confirm=no)).declined
    assert ledger.purges == {}

    report = await operations.purge(log, ledger, DLQ, actor="ops", confirm=yes)
    assert report.records == 3 and ledger.purges[DLQ] == {0: 2, 2: 1}
    assert ledger.audits[report.audit_id or ""]["result"] == "ok"
    listing = await operations.list_dead_letters(log, ledger, DLQ, None, show=10)
    assert listing.counts.total == 0
    plan = await operations.plan_replay(log, ledger, DLQ, None, None, max_records=10)
    assert plan.redrives == []
    assert (await operations.purge(log, ledger, DLQ, actor="ops", confirm=None)).records == 0


async def test_a_replay_plan_holds_at_most_max_records_and_says_more_remain() -> None:
    log = FakeLog([letter(i, f"c{i}", 1) for i in range(5)])
    plan = await operations.plan_replay(log, FakeLedger(), DLQ, None, None, max_records=3)
    assert len(plan.redrives) == 3 and plan.truncated
