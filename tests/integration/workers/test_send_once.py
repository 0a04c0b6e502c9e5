"""Send once on the real Redis and a real SMTP sink: a worker that stalls past its claim while
another takes the send over hands nothing to the SMTP server; the e-mail goes out once."""

from __future__ import annotations

import asyncio
from email.message import EmailMessage
from pathlib import Path

from events import new_envelope
from service_runtime.redis_client import connect_redis
from service_runtime.settings import Settings
from tests.integration.workers.harness import mails_to, smtp_sink
from tests.support.factories import new_email
from tests.support.services import free_port
from workers import metrics
from workers.adapters.send_records import RedisSendRecords
from workers.adapters.smtp import SmtpMailer
from workers.application.welcome_emails import ALREADY_SENT, SENT, Guard, WelcomeEmails

CLAIM_SECONDS = 1.0
STALL_SECONDS = 3.0  # longer than the claim: the other worker takes over meanwhile


class StallsBeforeData(SmtpMailer):
    """The real SMTP adapter, stalling once the envelope is accepted and right before DATA."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__(host, port)
        self.stalled = asyncio.Event()

    async def send(self, message: EmailMessage, guard: Guard) -> None:
        async def stall_then_guard() -> None:
            self.stalled.set()
            await asyncio.sleep(STALL_SECONDS)
            await guard()

        await super().send(message, stall_then_guard)


async def test_a_worker_stalled_past_its_claim_sends_nothing_and_the_email_goes_out_once(
    settings: Settings, tmp_path: Path
) -> None:
    port, maildir = free_port(), tmp_path / "smtp"
    recipient = new_email("stall")
    event = new_envelope(
        event_type="UserRegistered",
        aggregate_id="u-stall",
        aggregate_version=1,
        payload={"email": recipient, "name": "Stella", "roles": ["user"]},
        correlation_id="corr-stall",
    )
    first_redis, second_redis = connect_redis(settings), connect_redis(settings)
    lost_before = metrics.CLAIMS_LOST.labels("notifications", "send")._value.get()
    try:
        async with smtp_sink(port, maildir):
            stalling = StallsBeforeData("127.0.0.1", port)
            first = WelcomeEmails(
                stalling,
                RedisSendRecords(first_redis, settings.redis_prefix, "welcome", CLAIM_SECONDS),
                settings.smtp_sender,
                poll_seconds=0.1,
            )
            second = WelcomeEmails(
                SmtpMailer("127.0.0.1", port),
                RedisSendRecords(second_redis, settings.redis_prefix, "welcome", CLAIM_SECONDS),
                settings.smtp_sender,
                poll_seconds=0.1,
            )
            stalled_send = asyncio.create_task(first(event))
            await asyncio.wait_for(stalling.stalled.wait(), 20)
            # The second worker (a redelivery after a rebalance) waits out the first's claim, then
            # sends, while the first is still stalled inside its SMTP session.
            assert await second(event) == SENT
            assert not stalled_send.done(), "the first worker was to be stalled still"
            assert await asyncio.wait_for(stalled_send, 30) == ALREADY_SENT

            records = RedisSendRecords(first_redis, settings.redis_prefix, "welcome")
            assert await records.state(str(event.event_id)) == "sent"
            assert len(mails_to(maildir, recipient)) == 1
            lost_after = metrics.CLAIMS_LOST.labels("notifications", "send")._value.get()
            assert lost_after == lost_before + 1
    finally:
        await first_redis.aclose()
        await second_redis.aclose()
