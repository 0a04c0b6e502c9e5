"""The send-once protocol of welcome e-mails, the backoff, and dead-lettering, with in-memory fakes."""

from __future__ import annotations

from email.message import EmailMessage

import orjson
import pytest

from events import encode_event, new_envelope
from workers.application.event_worker import (
    DEAD_LETTERED,
    IGNORED,
    Delivery,
    EventWorker,
    WorkerStats,
)
from workers.application.retries import (
    AttemptsExhausted,
    Backoff,
    PermanentFailure,
    retry_with_backoff,
)
from workers.application.welcome_emails import (
    ALREADY_SENT,
    SENT,
    ClaimState,
    ConfirmState,
    Guard,
    MailRejected,
    MarkState,
    WelcomeEmails,
)


class MemorySendRecords:
    claim_ttl_seconds = 1.0

    def __init__(self) -> None:
        self.records: dict[str, tuple[str, str | None]] = {}

    async def claim(self, event_id: str, owner: str) -> ClaimState:
        state = self.records.get(event_id)
        if state is None:
            self.records[event_id] = ("sending", owner)
            return "claimed"
        return "sent" if state[0] == "sent" else "held"

    async def confirm(self, event_id: str, owner: str) -> ConfirmState:
        state = self.records.get(event_id)
        if state is not None and state[0] == "sent":
            return "sent"
        if state is not None and state[1] != owner:
            return "held"
        self.records[event_id] = ("sending", owner)
        return "confirmed"

    async def mark_sent(self, event_id: str, owner: str) -> MarkState:
        before = self.records.get(event_id)
        self.records[event_id] = ("sent", None)
        if before is not None and before[0] == "sent":
            return "already_sent"
        return "marked" if before == ("sending", owner) else "claim_lost"

    async def release(self, event_id: str, owner: str) -> None:
        if self.records.get(event_id) == ("sending", owner):
            del self.records[event_id]


class FlakyMailer:
    def __init__(self, failures: int = 0, error: Exception | None = None) -> None:
        self.failures = failures
        self.error = error or ConnectionRefusedError("smtp down")
        self.sent: list[EmailMessage] = []

    async def send(self, message: EmailMessage, guard: Guard) -> None:
        if self.failures:
            self.failures -= 1
            raise self.error
        await guard()
        self.sent.append(message)


class MemoryDeadLetters:
    def __init__(self) -> None:
        self.records: list[tuple[Delivery, str, str, int]] = []

    async def publish(self, delivery: Delivery, *, reason: str, error: str, attempts: int) -> None:
        self.records.append((delivery, reason, error, attempts))


async def no_sleep(seconds: float) -> None:
    return None


def registered(email: str = "ana@example.com", name: str = "Ana"):
    return new_envelope(
        event_type="UserRegistered",
        aggregate_id="u-1",
        aggregate_version=1,
        payload={"email": email, "name": name, "roles": ["user"]},
        correlation_id="corr-1",
    )


def delivery_of(value: bytes) -> Delivery:
    return Delivery("t.users.events", 0, 7, b"u-1", value, {"h": "v"})


async def test_same_event_delivered_twice_sends_one_email_addressed_by_name() -> None:
    mailer, records = FlakyMailer(), MemorySendRecords()
    handler = WelcomeEmails(mailer, records, "campaigns@localhost", sleep=no_sleep)
    event = registered()

    assert await handler(event) == SENT
    assert await handler(event) == ALREADY_SENT

    assert len(mailer.sent) == 1
    message = mailer.sent[0]
    assert message["To"] == "Ana <ana@example.com>"
    assert message["From"] == "campaigns@localhost"
    assert "Hello Ana" in message.get_content()
    assert str(event.event_id) in message["Message-ID"]


async def test_failed_send_releases_the_claim_so_the_retry_can_send() -> None:
    mailer, records = FlakyMailer(failures=1), MemorySendRecords()
    handler = WelcomeEmails(mailer, records, "campaigns@localhost", sleep=no_sleep)
    event = registered()

    with pytest.raises(ConnectionRefusedError):
        await handler(event)
    assert str(event.event_id) not in records.records
    assert await handler(event) == SENT
    assert len(mailer.sent) == 1


async def test_a_claim_held_by_another_consumer_is_awaited_and_its_send_not_repeated() -> None:
    mailer, records = FlakyMailer(), MemorySendRecords()
    event = registered()
    records.records[str(event.event_id)] = ("sending", "someone-else")

    async def other_finishes(seconds: float) -> None:
        await records.mark_sent(str(event.event_id), "someone-else")

    handler = WelcomeEmails(mailer, records, "campaigns@localhost", sleep=other_finishes)
    assert await handler(event) == ALREADY_SENT
    assert mailer.sent == []


class StallingMailer(FlakyMailer):
    """Stalls before handing the message over; meanwhile `during_stall` runs (another worker)."""

    def __init__(self, during_stall) -> None:  # type: ignore[no-untyped-def]
        super().__init__()
        self.during_stall = during_stall

    async def send(self, message: EmailMessage, guard: Guard) -> None:
        if self.during_stall is not None:
            during, self.during_stall = self.during_stall, None
            await during()
        await super().send(message, guard)


async def test_a_worker_that_stalled_past_its_claim_does_not_send_what_another_sent() -> None:
    records = MemorySendRecords()
    event = registered()
    event_id = str(event.event_id)
    other = FlakyMailer()

    async def another_worker_takes_over() -> None:
        del records.records[event_id]  # the stalled worker's claim expired
        taker = WelcomeEmails(other, records, "campaigns@localhost", sleep=no_sleep)
        assert await taker(event) == SENT

    stalled = StallingMailer(another_worker_takes_over)
    handler = WelcomeEmails(stalled, records, "campaigns@localhost", sleep=no_sleep)
    assert await handler(event) == ALREADY_SENT
    assert (len(other.sent), len(stalled.sent)) == (1, 0)


async def test_a_stalled_claim_nobody_took_is_retaken_and_sent_once() -> None:
    records = MemorySendRecords()
    event = registered()

    async def claim_expires() -> None:
        del records.records[str(event.event_id)]

    mailer = StallingMailer(claim_expires)
    handler = WelcomeEmails(mailer, records, "campaigns@localhost", sleep=no_sleep)
    assert await handler(event) == SENT
    assert len(mailer.sent) == 1
    assert records.records[str(event.event_id)] == ("sent", None)


async def test_a_mark_after_a_takeover_still_records_sent_so_the_taker_stops_at_its_confirm() -> None:
    records = MemorySendRecords()
    event_id = "ev-1"
    records.records[event_id] = ("sending", "taker")  # took over while "stalled" was sending
    assert await records.mark_sent(event_id, "stalled") == "claim_lost"
    assert await records.confirm(event_id, "taker") == "sent"


async def test_backoff_doubles_and_gives_up_after_max_attempts() -> None:
    waits: list[float] = []
    calls = 0

    async def failing() -> None:
        nonlocal calls
        calls += 1
        raise TimeoutError("no answer")

    async def record_wait(seconds: float) -> None:
        waits.append(seconds)

    with pytest.raises(AttemptsExhausted) as raised:
        await retry_with_backoff(failing, Backoff(0.5, 4), sleep=record_wait)
    assert calls == 4
    assert waits == [0.5, 1.0, 2.0]
    assert raised.value.attempts == 4
    assert isinstance(raised.value.last_error, TimeoutError)


async def test_permanent_failure_is_not_retried() -> None:
    calls = 0

    async def refused() -> None:
        nonlocal calls
        calls += 1
        raise PermanentFailure("no such mailbox")

    with pytest.raises(PermanentFailure):
        await retry_with_backoff(refused, Backoff(0.5, 5), sleep=no_sleep)
    assert calls == 1


def worker(mailer: FlakyMailer, dead: MemoryDeadLetters, attempts: int = 3) -> EventWorker:
    handler = WelcomeEmails(mailer, MemorySendRecords(), "campaigns@localhost", sleep=no_sleep)
    stats = WorkerStats("notifications")
    w = EventWorker(handler, dead, Backoff(0.001, attempts), stats)
    return w


async def test_smtp_failing_past_max_attempts_dead_letters_with_the_reason() -> None:
    dead = MemoryDeadLetters()
    w = worker(FlakyMailer(failures=10), dead, attempts=3)

    assert await w.consume(delivery_of(encode_event(registered()))) == DEAD_LETTERED

    [(delivery, reason, error, attempts)] = dead.records
    assert delivery.offset == 7
    assert "gave up after 3 attempts" in reason and "smtp down" in reason
    assert error == "ConnectionRefusedError"
    assert attempts == 3
    assert w.stats.retries == 2


async def test_refused_recipient_is_dead_lettered_without_retrying() -> None:
    dead = MemoryDeadLetters()
    mailer = FlakyMailer(failures=10, error=MailRejected("550 no such user"))
    w = worker(mailer, dead)

    assert await w.consume(delivery_of(encode_event(registered()))) == DEAD_LETTERED
    assert dead.records[0][1].startswith("permanent failure: 550")
    assert w.stats.retries == 0


@pytest.mark.parametrize("name", ["Eve\r\nBcc: victim@example.com", "Eve\nX", "Eve\rX"])
async def test_an_unbuildable_welcome_email_is_dead_lettered_at_once_with_its_reason(name: str) -> None:
    dead = MemoryDeadLetters()
    mailer = FlakyMailer()
    w = worker(mailer, dead, attempts=5)

    assert await w.consume(delivery_of(encode_event(registered(name=name)))) == DEAD_LETTERED
    [(_, reason, error, attempts)] = dead.records
    assert reason.startswith("permanent failure: the welcome e-mail cannot be built")
    assert error == "UnbuildableMessage" and attempts == 1
    assert w.stats.retries == 0 and mailer.sent == []


async def test_invalid_and_unknown_events_are_dead_lettered_and_other_types_ignored() -> None:
    dead = MemoryDeadLetters()
    w = worker(FlakyMailer(), dead)
    unknown = orjson.dumps({**orjson.loads(encode_event(registered())), "event_type": "UserVanished"})

    assert await w.consume(delivery_of(b"{not json")) == DEAD_LETTERED
    assert await w.consume(delivery_of(unknown)) == DEAD_LETTERED
    logged_in = new_envelope(
        event_type="UserLoggedIn", aggregate_id="u-1", aggregate_version=2, payload={}, correlation_id="c"
    )
    assert await w.consume(delivery_of(encode_event(logged_in))) == IGNORED

    reasons = [r[1] for r in dead.records]
    assert reasons[0].startswith("invalid event: not JSON")
    assert "unknown event_type 'UserVanished'" in reasons[1]


async def test_a_batch_skips_other_types_by_header_undecoded_and_handles_the_rest_in_order() -> None:
    dead = MemoryDeadLetters()
    mailer = FlakyMailer()
    w = worker(mailer, dead)
    first, second = registered(name="First"), registered(name="Second")
    batch = [
        Delivery("t.users.events", 0, 1, b"u-1", encode_event(first), {"event_type": "UserRegistered"}),
        # Another type by its header: skipped without decoding (this value would not decode).
        Delivery("t.users.events", 0, 2, b"u-1", b"{not json", {"event_type": "UserLoggedIn"}),
        # No header: decoded and judged as a single delivery would be.
        Delivery("t.users.events", 0, 3, b"u-1", b"{not json", {}),
        Delivery("t.users.events", 0, 4, b"u-2", encode_event(second), {"event_type": "UserRegistered"}),
    ]

    outcomes = await w.consume_batch(batch)

    assert outcomes == [SENT, IGNORED, DEAD_LETTERED, SENT]
    assert [m["To"].split("<")[0].strip() for m in mailer.sent] == ["First", "Second"]
    assert [r[0].offset for r in dead.records] == [3]
    assert w.stats.outcomes[IGNORED] == 1 and w.stats.outcomes[SENT] == 2


async def test_a_batch_whose_dead_letter_publish_fails_raises_so_it_is_consumed_again() -> None:
    class BrokenDeadLetters(MemoryDeadLetters):
        async def publish(self, delivery: Delivery, *, reason: str, error: str, attempts: int) -> None:
            raise ConnectionError("kafka away")

    w = worker(FlakyMailer(), BrokenDeadLetters())
    with pytest.raises(ConnectionError):
        await w.consume_batch([delivery_of(b"{not json")])
