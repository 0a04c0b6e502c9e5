"""The SMTP adapter (aiosmtplib): hands a message to the configured server, sorting refusals."""

from __future__ import annotations

from email.message import EmailMessage

import aiosmtplib

from workers.application.welcome_emails import MailRejected

SMTP_TIMEOUT_SECONDS = 10.0


class SmtpMailer:
    def __init__(self, host: str, port: int, timeout: float = SMTP_TIMEOUT_SECONDS) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout

    async def send(self, message: EmailMessage) -> None:
        try:
            await aiosmtplib.send(message, hostname=self.host, port=self.port, timeout=self.timeout)
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
