"""Welcome e-mails, sent once per UserRegistered event even across crashes, redelivery and stalls.

The protocol, around a send record keyed by the event id, every step naming its owner:

1. claim the record ("sending", with an expiry) — only if nobody holds it and it is not "sent";
   a record already "sent" means a previous delivery did the job: skip;
   a record "sending" held by someone else (a consumer before a rebalance, or one that crashed)
   is waited on until it turns "sent" (skip) or expires (claim it then);
2. open the SMTP session (connect, EHLO, MAIL FROM, RCPT TO) and, right before DATA — the point
   after which the server may deliver — confirm the claim: still ours (its expiry renewed), or
   lapsed with nobody else having taken it (retaken). If another worker took it over while this
   one stalled, or it is "sent", nothing is handed over and we go back to step 1;
3. mark the record "sent" (kept without expiry). The mark checks the owner too: a mark after the
   claim was lost still records "sent" (the message did go out, and a worker that took over but
   has not reached its own confirm then stops there), and it is counted and logged as a possible
   duplicate. If the send failed, the claim is released so the next attempt can take it.

What remains, and only for a stall or crash longer than the claim's expiry (120 s by default,
far above the SMTP timeout): (a) between the confirm and the server's answer to DATA, and (b)
after the server accepted the message and before the mark. In either, another worker can take
over and send again: at most one duplicate per lapse. The message carries a Message-ID derived
from the event id, so a receiving system can recognise that copy. An SMTP server offers no way to
take a message back or to make DATA conditional, so this window cannot be closed from our side.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from email.message import EmailMessage
from typing import Literal, Protocol

from events import EventEnvelope
from workers import metrics
from workers.application.retries import PermanentFailure
from workers.domain.welcome_email import welcome_email

log = logging.getLogger(__name__)

ClaimState = Literal["claimed", "sent", "held"]
ConfirmState = Literal["confirmed", "sent", "held"]
MarkState = Literal["marked", "already_sent", "claim_lost"]
Guard = Callable[[], Awaitable[None]]

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


class ClaimLost(Exception):
    """Another worker took the send over (or it is sent) while this one stalled: hand nothing over."""


class Mailer(Protocol):
    async def send(self, message: EmailMessage, guard: Guard) -> None:
        """Hand over the message; raise MailRejected for a permanent refusal, anything else to retry.

        `guard()` is awaited right before the message itself is handed over (SMTP DATA); when it
        raises (ClaimLost), nothing is handed over and the exception propagates."""


class SendRecords(Protocol):
    claim_ttl_seconds: float

    async def claim(self, event_id: str, owner: str) -> ClaimState: ...

    async def confirm(self, event_id: str, owner: str) -> ConfirmState: ...

    async def mark_sent(self, event_id: str, owner: str) -> MarkState: ...

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

        async def guard() -> None:
            if await self.records.confirm(event_id, owner) != "confirmed":
                raise ClaimLost(f"the send of event {event_id} was taken over or is done")

        while True:
            state = await self._claim(event_id, owner)
            if state == "sent":
                return ALREADY_SENT
            try:
                await self.mailer.send(message, guard)
            except ClaimLost:
                metrics.CLAIMS_LOST.labels(self.name, "send").inc()
                log.warning("claim lost before the send; nothing handed over", extra={"event_id": event_id})
                continue  # back to the claim: "sent" (skip), held (wait), or lapsed (ours again)
            except Exception:
                # Not on cancellation: a send cut off at shutdown may have been accepted, so the
                # claim is left to expire exactly as after a crash.
                await self.records.release(event_id, owner)
                raise
            break
        marked = await self.records.mark_sent(event_id, owner)
        if marked != "marked":
            metrics.CLAIMS_LOST.labels(self.name, "mark").inc()
            log.warning(
                "claim lost while sending: the message may have gone out twice",
                extra={"event_id": event_id, "mark": marked},
            )
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
