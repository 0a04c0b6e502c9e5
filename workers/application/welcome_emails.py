"""Welcome e-mails, sent once per UserRegistered event even across crashes and redelivery.

The protocol, around a send record keyed by the event id:

1. claim the record ("sending", with an expiry) — only if nobody holds it and it is not "sent";
   a record already "sent" means a previous delivery did the job: skip;
   a record "sending" held by someone else (a consumer before a rebalance, or one that crashed)
   is waited on until it turns "sent" (skip) or expires (claim it then);
2. hand the message to the SMTP server;
3. mark the record "sent" (kept without expiry); if the send failed, release the claim so the
   next attempt, here or elsewhere, can take it.

The one window that remains: a crash after the SMTP server accepted the message but before the
record was marked "sent". The claim then expires and the redelivered event is sent again: at most
one duplicate, after the claim's expiry. The message carries a Message-ID derived from the event
id, so a receiving system can recognise that copy. (An SMTP timeout after DATA, where the server
may have accepted without our hearing it, is the same window seen from the network.)
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from email.message import EmailMessage
from typing import Literal, Protocol

from events import EventEnvelope
from workers import metrics
from workers.application.retries import PermanentFailure
from workers.domain.welcome_email import welcome_email

ClaimState = Literal["claimed", "sent", "held"]

SENT = "sent"
ALREADY_SENT = "already_sent"


class MailRejected(PermanentFailure):
    """The SMTP server refused the message for good (a 5xx): another attempt would be refused too."""


class UnbuildableMessage(PermanentFailure):
    """The event's data cannot make a valid message (a CR/LF in a header field, say, from a name
    registered before names were checked): no attempt would succeed, so it is dead-lettered at
    once with this reason."""


class ClaimStillHeld(Exception):
    """Another consumer's claim outlived its expiry window; try again later."""


class Mailer(Protocol):
    async def send(self, message: EmailMessage) -> None:
        """Hand over the message; raise MailRejected for a permanent refusal, anything else to retry."""


class SendRecords(Protocol):
    claim_ttl_seconds: float

    async def claim(self, event_id: str, owner: str) -> ClaimState: ...

    async def mark_sent(self, event_id: str) -> None: ...

    async def release(self, event_id: str, owner: str) -> None: ...


class WelcomeEmails:
    """The notifications worker's handler: one welcome e-mail per UserRegistered event."""

    name = "notifications"
    handles = frozenset({"UserRegistered"})

    def __init__(
        self,
        mailer: Mailer,
        records: SendRecords,
        sender: str,
        poll_seconds: float = 0.5,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.mailer = mailer
        self.records = records
        self.sender = sender
        self.poll_seconds = poll_seconds
        self.sleep = sleep

    async def __call__(self, event: EventEnvelope) -> str:
        event_id = str(event.event_id)
        try:
            message = welcome_email(event, self.sender)
        except (ValueError, TypeError) as exc:  # pydantic's ValidationError is a ValueError
            raise UnbuildableMessage(f"the welcome e-mail cannot be built: {exc}") from exc
        owner = uuid.uuid4().hex
        state = await self._claim(event_id, owner)
        if state == "sent":
            return ALREADY_SENT
        try:
            await self.mailer.send(message)
        except Exception:
            # Not on cancellation: a send cut off at shutdown may have been accepted, so the claim
            # is left to expire exactly as after a crash.
            await self.records.release(event_id, owner)
            raise
        await self.records.mark_sent(event_id)
        metrics.EMAILS_SENT.labels(self.name).inc()
        return SENT

    async def _claim(self, event_id: str, owner: str) -> ClaimState:
        # Waiting a little past the expiry lets a crashed holder's claim lapse, then it is ours.
        deadline = time.monotonic() + self.records.claim_ttl_seconds + 2 * self.poll_seconds
        while True:
            state = await self.records.claim(event_id, owner)
            if state != "held":
                return state
            if time.monotonic() > deadline:
                raise ClaimStillHeld(f"the send record of event {event_id} is still claimed by another")
            await self.sleep(self.poll_seconds)
