"""The shape of GET /stats, from the stats projection's counters."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, get_args

from events.types import CampaignStatus, Channel
from readmodels.stats import join_amount

WINDOW_MINUTES = 60
LIVE_STATUSES = [s.value for s in CampaignStatus if s is not CampaignStatus.DELETED]
CHANNELS = list(get_args(Channel))


def window(now: datetime | None = None) -> list[datetime]:
    """The last WINDOW_MINUTES minutes, oldest first, the current (partial) one last."""
    current = (now or datetime.now(UTC)).replace(second=0, microsecond=0)
    return [current - timedelta(minutes=n) for n in range(WINDOW_MINUTES - 1, -1, -1)]


def stats_document(
    counts: dict[str, int], budget: dict[str, int], minutes: list[datetime], per_minute: list[int]
) -> dict[str, Any]:
    """Totals count live (not deleted) campaigns; `deleted` counts the tombstones apart."""
    currencies = sorted({field.split(":", 1)[0] for field in budget})
    totals = {}
    for currency in currencies:
        units, frac = budget.get(f"{currency}:units", 0), budget.get(f"{currency}:frac", 0)
        if units or frac:
            totals[currency] = join_amount(units, frac)
    return {
        "campaigns": {
            "total": counts.get("campaigns.total", 0),
            "by_status": {s: counts.get(f"status:{s}", 0) for s in LIVE_STATUSES},
            "by_channel": {c: counts.get(f"channel:{c}", 0) for c in CHANNELS},
            "deleted": counts.get("campaigns.deleted", 0),
        },
        "budget_by_currency": totals,
        "users": {"total": counts.get("users.total", 0)},
        "events_per_minute": [
            {"minute": m.strftime("%Y-%m-%dT%H:%M:00Z"), "count": n}
            for m, n in zip(minutes, per_minute, strict=True)
        ],
    }
