"""Why a command was not carried out, beyond what the domain itself refuses."""

from __future__ import annotations


class CommandRefused(Exception):
    """Base of the application's refusals (each maps to one HTTP status at the edge)."""


class NotFound(CommandRefused):
    """No such aggregate, or one the caller may not see (ids do not leak)."""


class EmailTaken(CommandRefused):
    pass


class VersionRequired(CommandRefused):
    """The command must name the version it was decided on (If-Match)."""


class StaleVersion(CommandRefused):
    """The aggregate changed since the version the caller named."""

    def __init__(self, current: int | None = None) -> None:
        self.current = current
        super().__init__("the campaign changed since that version")


class ConcurrencyConflict(CommandRefused):
    """Another command committed on the same aggregate version first."""


class InvalidCredentials(CommandRefused):
    pass


class WrongCurrentPassword(CommandRefused):
    """A signed-in user's proof of the password they want to change failed (403, naming the field)."""

    def __init__(self) -> None:
        super().__init__("the current password is wrong")


class Throttled(CommandRefused):
    """Over a rate limit: 429 with Retry-After."""

    def __init__(self, retry_after: int, what: str = "requests") -> None:
        self.retry_after = retry_after
        super().__init__(f"too many {what}; retry in {retry_after} s")


class LoginThrottled(Throttled):
    def __init__(self, retry_after: int) -> None:
        super().__init__(retry_after, "login attempts")


class RegistrationThrottled(Throttled):
    def __init__(self, retry_after: int) -> None:
        super().__init__(retry_after, "registrations from this address")


class CommandsThrottled(Throttled):
    def __init__(self, retry_after: int) -> None:
        super().__init__(retry_after, "commands from this user")


class TooManyLiveCampaigns(Throttled):
    """The owner's cap on campaigns neither deleted nor completed (429: finish or delete one)."""

    def __init__(self, limit: int) -> None:
        CommandRefused.__init__(
            self, f"at most {limit} campaigns may be live at once; complete or delete one first"
        )
        self.retry_after = 60


class SessionRejected(CommandRefused):
    """The refresh token is unknown, expired, revoked or was already used."""


class IdempotencyKeyTaken(CommandRefused):
    """Another request under the same Idempotency-Key committed first (its answer is replayed)."""


class IdempotencyKeyReused(CommandRefused):
    """The Idempotency-Key was already used with a different request."""
