"""The SMTP adapter (aiosmtplib): hands a message to the configured server, sorting refusals.

The session runs as aiosmtplib's own (EHLO, STARTTLS when offered, MAIL FROM, RCPT TO), but the
caller's guard is awaited right before DATA: the last moment at which not sending is still possible.
"""

from __future__ import annotations

from email.message import EmailMessage
from typing import Any

import aiosmtplib

from workers.application.welcome_emails import Guard, MailRejected

SMTP_TIMEOUT_SECONDS = 10.0


class SmtpMailer:
    def __init__(self, host: str, port: int, timeout: float = SMTP_TIMEOUT_SECONDS) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout

    async def send(self, message: EmailMessage, guard: Guard) -> None:
        try:
            async with _GuardedSMTP(guard, hostname=self.host, port=self.port, timeout=self.timeout) as smtp:
                await smtp.send_message(message)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            if all(_permanent(r) for r in exc.recipients):
                raise MailRejected(f"every recipient refused: {exc}") from exc
            raise
        except aiosmtplib.SMTPResponseException as exc:
            if _permanent(exc):
                raise MailRejected(f"refused with {exc.code}: {exc.message}") from exc
            raise


def _permanent(exc: aiosmtplib.SMTPResponseException) -> bool:
    # A 5xx greeting can be a server starting up or shedding load; only a 5xx to the mail
    # transaction itself says the message will never be taken.
    return 500 <= exc.code < 600 and not isinstance(exc, aiosmtplib.SMTPConnectResponseError)


class _GuardedSMTP(aiosmtplib.SMTP):
    """aiosmtplib's client, with the guard awaited before DATA (after the envelope was accepted)."""

    def __init__(self, guard: Guard, **options: Any) -> None:
        super().__init__(**options)
        self._guard = guard

    async def data(self, message: str | bytes, /, **options: Any) -> aiosmtplib.SMTPResponse:
        await self._guard()
        return await super().data(message, **options)
