"""Old schema versions are upcast on read, one version step at a time, never rewritten."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Payload = dict[str, Any]
Upcaster = Callable[[Payload], Payload]

_UPCASTERS: dict[tuple[str, int], Upcaster] = {}


def upcaster(event_type: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
    """Register a function that turns `event_type` payloads of `from_version` into the next."""

    def register(fn: Upcaster) -> Upcaster:
        key = (event_type, from_version)
        if key in _UPCASTERS:
            raise ValueError(f"upcaster for {event_type} v{from_version} registered twice")
        _UPCASTERS[key] = fn
        return fn

    return register


def registered_steps() -> frozenset[tuple[str, int]]:
    """Every (event type, from version) an upcaster is registered for."""
    return frozenset(_UPCASTERS)


def upcast(event_type: str, version: int, payload: Payload, target: int) -> Payload:
    """Apply upcasters from `version` up to `target`; fails if a step is missing."""
    if version > target:
        raise ValueError(f"{event_type} v{version} is newer than this code knows (v{target})")
    while version < target:
        step = _UPCASTERS.get((event_type, version))
        if step is None:
            raise ValueError(f"no upcaster for {event_type} v{version}")
        payload = step(payload)
        version += 1
    return payload


@upcaster("CampaignCreated", 1)
def _campaign_created_v1_budget_to_money(payload: Payload) -> Payload:
    """v1 kept `budget` as a number in euros and had no tags."""
    upgraded = dict(payload)
    budget = upgraded.pop("budget")
    upgraded["budget"] = {"amount": f"{float(budget):.2f}", "currency": "EUR"}
    upgraded.setdefault("tags", [])
    return upgraded


@upcaster("CampaignActivated", 1)
@upcaster("CampaignCompleted", 1)
def _lifecycle_v1_had_no_timer(payload: Payload) -> Payload:
    """v1 was empty; v2 added the optional `timer` of a scheduled firing (absent: by hand)."""
    return dict(payload)
