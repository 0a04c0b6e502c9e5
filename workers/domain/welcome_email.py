"""The welcome e-mail a new user receives, composed from their `UserRegistered` event."""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import format_datetime, formataddr

from events.envelope import EventEnvelope
from events.types import UserRegistered

MESSAGE_ID_DOMAIN = "campaigns-cqrs.invalid"


def welcome_email(event: EventEnvelope, sender: str) -> EmailMessage:
    """The message for `event` (a UserRegistered), addressed to the user by name."""
    user = UserRegistered.model_validate(event.payload)
    message = EmailMessage()
    message["From"] = sender
    message["To"] = formataddr((user.name, str(user.email)))
    message["Subject"] = f"Welcome to Campaigns, {user.name}"
    message["Date"] = format_datetime(event.occurred_at)
    # Derived from the event, so if the one remaining window ever yields a second copy, the
    # receiving side can recognise it as the same message.
    message["Message-ID"] = f"<welcome.{event.event_id}@{MESSAGE_ID_DOMAIN}>"
    message.set_content(
        f"Hello {user.name},\n\n"
        "welcome to Campaigns. Your account is ready: sign in to create your first campaign.\n\n"
        "- The Campaigns team\n"
    )
    return message


def recipient_of(event: EventEnvelope) -> str:
    return str(UserRegistered.model_validate(event.payload).email)
