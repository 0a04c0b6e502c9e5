"""The stats read model: how each event moves the counters.

A campaign contributes to the counters through its current status, channel and budget; the
Lua apply subtracts the old contribution and adds the new one, so every event only says what
it changed. Budgets are kept as whole units plus ten-thousandths in two integer counters:
exact decimal sums with Redis' integer increments, no floating point.
"""

from __future__ import annotations

from decimal import Decimal

from events import EventEnvelope

BUDGET_SCALE = 10_000  # budgets carry at most four decimal places (events.types.Budget)
_STATUS_AFTER = {
    "CampaignCreated": "draft",
    "CampaignScheduled": "scheduled",
    "CampaignUnscheduled": "draft",
    "CampaignActivated": "active",
    "CampaignPaused": "paused",
    "CampaignCompleted": "completed",
}


class NotAStatsEvent(ValueError):
    """The projection was handed an event it has no rule for."""


# Minute (seconds since the epoch // 60) -> its text: a batch's events fall in few minutes, and
# strftime was a fifth of the stats projection's Python per event.
_MINUTE_TEXTS: dict[int, str] = {}
_MINUTES_KEPT = 4096


def minute_bucket(envelope: EventEnvelope) -> str:
    # By occurred_at, not by arrival: a replay yields the same buckets as the live run.
    # (occurred_at is in UTC: events.envelope validates it so.)
    at = envelope.occurred_at
    minute = int(at.timestamp() // 60)
    text = _MINUTE_TEXTS.get(minute)
    if text is None:
        if len(_MINUTE_TEXTS) >= _MINUTES_KEPT:
            _MINUTE_TEXTS.clear()
        text = _MINUTE_TEXTS[minute] = at.strftime("%Y-%m-%dT%H:%M")
    return text


def split_amount(amount: str) -> tuple[str, str]:
    """ "1234.5" -> ("1234", "5000"): whole units and ten-thousandths, as integer strings."""
    whole, _, fraction = amount.partition(".")
    return str(int(whole)), str(int((fraction + "0000")[:4]))


def join_amount(units: int, ten_thousandths: int) -> str:
    """The inverse of a sum of `split_amount`s, with at least two decimal places."""
    total = Decimal(units) + Decimal(ten_thousandths) / BUDGET_SCALE
    whole, _, decimals = f"{total:.4f}".partition(".")
    return f"{whole}.{decimals.rstrip('0').ljust(2, '0')}"


def stats_change_args(envelope: EventEnvelope) -> list[str]:
    minute = minute_bucket(envelope)
    kind = envelope.event_type
    if envelope.aggregate_type == "user":
        return ["user", minute, "1" if kind == "UserRegistered" else "0"]
    values: dict[str, str] = {}
    payload = envelope.payload
    if kind in _STATUS_AFTER:
        values["status"] = _STATUS_AFTER[kind]
    if kind == "CampaignDeleted":
        values["deleted"] = "1"
    elif kind in ("CampaignCreated", "CampaignUpdated"):
        if payload.get("channel") is not None:
            values["channel"] = payload["channel"]
        if payload.get("budget") is not None:
            units, fraction = split_amount(payload["budget"]["amount"])
            values.update(currency=payload["budget"]["currency"], units=units, frac=fraction)
    elif kind not in _STATUS_AFTER:
        raise NotAStatsEvent(f"the stats projection has no rule for {kind}")
    args = ["campaign", minute]
    for name, value in values.items():
        args += [name, value]
    return args
