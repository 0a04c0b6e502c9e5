"""The campaign aggregate: its fields' invariants, its lifecycle, and who may change it.

Lifecycle: draft -> scheduled -> active <-> paused -> completed (and draft -> active by hand);
delete from any state. A scheduled campaign is activated at `starts_at`, an active or paused one
completed at `ends_at`: `next_transition` says which of those is pending, and `due_timer` turns it
into the durable timer the unit of work keeps beside the campaign (derived from the events a
command records, so a timer never lives only in memory). `fire` is what the scheduler calls.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, get_args

from command_api.domain.aggregate import Aggregate, to_millisecond_utc
from command_api.domain.currencies import ISO_4217
from command_api.domain.errors import (
    CONTROL_CHARACTERS_REASON,
    AggregateGone,
    FieldChecks,
    FieldError,
    InvalidInput,
    InvalidTransition,
    has_control_characters,
)
from events.types import Budget as Money
from events.types import (
    CampaignActivated,
    CampaignCompleted,
    CampaignCreated,
    CampaignDeleted,
    CampaignPaused,
    CampaignScheduled,
    CampaignStatus,
    CampaignUnscheduled,
    CampaignUpdated,
    Channel,
    TimerFiring,
)

NAME_MAX = 200
DESCRIPTION_MAX = 5000
TAGS_MAX = 50
TAG_MAX = 50
CHANNELS: tuple[str, ...] = get_args(Channel)
# Same shape as the contract's Budget.amount: no sign, up to 15 integer and 4 decimal digits.
AMOUNT_PATTERN = re.compile(r"^\d{1,15}(\.\d{1,4})?$")


@dataclass(frozen=True)
class Actor:
    """Who issues a command: enough to decide whether they may change a campaign."""

    user_id: str
    is_admin: bool = False


# The scheduler acts on every campaign, by the system's authority: its events name it as actor.
SCHEDULER_ACTOR_ID = "scheduler"
SCHEDULER = Actor(SCHEDULER_ACTOR_ID, is_admin=True)


@dataclass(frozen=True)
class Transition:
    """What happens to a campaign next without anyone asking: `action` at `at`."""

    action: str  # "activate" | "complete"
    to: CampaignStatus
    at: datetime


@dataclass(frozen=True)
class DueTimer:
    """The durable timer of a campaign's next transition.

    Due at the transition's time, or when the timer was set if that is later (a campaign
    rescheduled into the past fires at once, and its lateness is the scheduler's, not the
    user's). The id names the campaign version that set it: the causation of what it fires."""

    campaign_id: str
    timer_id: str
    action: str
    target_at: datetime
    due_at: datetime


def timer_id(campaign_id: str, version: int, action: str) -> str:
    """A timer's id: the campaign version that set it, and its transition."""
    return f"timer:{campaign_id}:v{version}:{action}"


@dataclass(frozen=True)
class CampaignDetails:
    """Every editable field of a campaign, each already checked and normalised."""

    name: str
    description: str
    channel: str
    budget: Money
    starts_at: datetime
    ends_at: datetime
    tags: tuple[str, ...]

    @classmethod
    def parse(
        cls,
        *,
        name: str,
        description: str,
        channel: str,
        budget_amount: str,
        budget_currency: str,
        starts_at: datetime,
        ends_at: datetime,
        tags: list[str],
    ) -> CampaignDetails:
        """Check every field, naming all the bad ones; raises InvalidInput."""
        checks = FieldChecks()
        details = cls(
            name=_checked_name(name, checks),
            description=_checked_description(description, checks),
            channel=_checked_channel(channel, checks),
            budget=_checked_budget(budget_amount, budget_currency, checks),
            starts_at=_checked_instant("starts_at", starts_at, checks),
            ends_at=_checked_instant("ends_at", ends_at, checks),
            tags=_checked_tags(tags, checks),
        )
        checks.raise_if_any()
        _check_schedule(details.starts_at, details.ends_at, checks)
        checks.raise_if_any()
        return details


@dataclass(frozen=True)
class CampaignChanges:
    """A partial edit: None means "leave as it is"."""

    name: str | None = None
    description: str | None = None
    channel: str | None = None
    budget_amount: str | None = None
    budget_currency: str | None = None
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    tags: list[str] | None = None

    def is_empty(self) -> bool:
        return all(value is None for value in self.__dict__.values())


# action -> (states it may start from, state it leads to, the event it records)
_LIFECYCLE: dict[str, tuple[frozenset[CampaignStatus], CampaignStatus, type[Any]]] = {
    "activate": (
        frozenset({CampaignStatus.DRAFT, CampaignStatus.SCHEDULED, CampaignStatus.PAUSED}),
        CampaignStatus.ACTIVE,
        CampaignActivated,
    ),
    "pause": (frozenset({CampaignStatus.ACTIVE}), CampaignStatus.PAUSED, CampaignPaused),
    # A running campaign may finish without being paused first.
    "complete": (
        frozenset({CampaignStatus.ACTIVE, CampaignStatus.PAUSED}),
        CampaignStatus.COMPLETED,
        CampaignCompleted,
    ),
}
LIFECYCLE_ACTIONS: tuple[str, ...] = (*_LIFECYCLE, "schedule", "unschedule")
# Events after which a campaign's next transition may differ (an update only if it moves a date).
_TIMER_EVENTS = (
    CampaignScheduled,
    CampaignUnscheduled,
    CampaignActivated,
    CampaignPaused,
    CampaignCompleted,
    CampaignDeleted,
)


@dataclass(eq=False)
class Campaign(Aggregate):
    owner_id: str
    details: CampaignDetails
    status: CampaignStatus
    created_at: datetime
    updated_at: datetime

    @classmethod
    def create(cls, *, campaign_id: str, owner_id: str, details: CampaignDetails, now: datetime) -> Campaign:
        now = to_millisecond_utc(now)
        campaign = cls(
            id=campaign_id,
            version=0,
            owner_id=owner_id,
            details=details,
            status=CampaignStatus.DRAFT,
            created_at=now,
            updated_at=now,
        )
        campaign._record(
            CampaignCreated(
                owner_id=owner_id,
                name=details.name,
                description=details.description,
                channel=details.channel,  # type: ignore[arg-type]  # checked against CHANNELS
                budget=details.budget,
                starts_at=details.starts_at,
                ends_at=details.ends_at,
                tags=list(details.tags),
            ),
            now,
        )
        return campaign

    @property
    def is_deleted(self) -> bool:
        return self.status is CampaignStatus.DELETED

    def may_be_changed_by(self, actor: Actor) -> bool:
        return actor.is_admin or actor.user_id == self.owner_id

    def update(self, changes: CampaignChanges, now: datetime) -> None:
        """Apply a partial edit; records CampaignUpdated with only the fields that really change."""
        self._ensure_exists()
        if self.status is CampaignStatus.COMPLETED:
            raise InvalidTransition("a completed campaign can no longer be changed")
        if changes.is_empty():
            raise InvalidInput([FieldError("body", "name at least one field to change")])
        merged = self._merge(changes)
        changed: dict[str, Any] = {}
        for name in ("name", "description", "channel", "starts_at", "ends_at"):
            if getattr(merged, name) != getattr(self.details, name):
                changed[name] = getattr(merged, name)
        if merged.budget != self.details.budget:
            changed["budget"] = merged.budget
        if merged.tags != self.details.tags:
            changed["tags"] = list(merged.tags)
        if not changed:
            return
        now = to_millisecond_utc(now)
        self.details = merged
        self.updated_at = now
        self._record(CampaignUpdated(**changed), now)

    def activate(self, now: datetime) -> None:
        """Draft, scheduled or paused -> active, by hand.

        Refused once `ends_at` has passed, as `schedule` is: the scheduler would only complete
        the campaign at once (its timer fires `fire`, which this rule does not hold back)."""
        self._move("activate", now, ends_must_be_ahead=True)

    def pause(self, now: datetime) -> None:
        self._move("pause", now)

    def complete(self, now: datetime) -> None:
        self._move("complete", now)

    def apply_lifecycle(self, action: str, now: datetime) -> None:
        """One of LIFECYCLE_ACTIONS by name (what the HTTP routes /activate, /pause, /complete,
        /schedule and /unschedule send)."""
        if action not in LIFECYCLE_ACTIONS:
            raise ValueError(f"unknown lifecycle action {action!r}")
        getattr(self, action)(now)  # each action's own method, with its own rules

    def schedule(self, now: datetime) -> None:
        """Draft -> scheduled; activated in the same command when `starts_at` has already passed.

        Refused once `ends_at` has passed: the campaign could only complete at once."""
        self._ensure_exists()
        if self.status is not CampaignStatus.DRAFT:
            raise InvalidTransition(
                f"cannot schedule the campaign: it is {self.status.value} (allowed from draft)"
            )
        now = to_millisecond_utc(now)
        if self.details.ends_at <= now:
            raise InvalidTransition("cannot schedule the campaign: its ends_at has passed")
        self.status = CampaignStatus.SCHEDULED
        self.updated_at = now
        self._record(CampaignScheduled(starts_at=self.details.starts_at, ends_at=self.details.ends_at), now)
        if self.details.starts_at <= now:
            self._move("activate", now)

    def unschedule(self, now: datetime) -> None:
        """Scheduled -> draft: the pending activation is cancelled."""
        self._ensure_exists()
        if self.status is not CampaignStatus.SCHEDULED:
            raise InvalidTransition(
                f"cannot unschedule the campaign: it is {self.status.value} (allowed from scheduled)"
            )
        now = to_millisecond_utc(now)
        self.status = CampaignStatus.DRAFT
        self.updated_at = now
        self._record(CampaignUnscheduled(), now)

    def next_transition(self) -> Transition | None:
        """Scheduled: activation at starts_at; active or paused: completion at ends_at; else none."""
        if self.status is CampaignStatus.SCHEDULED:
            return Transition("activate", CampaignStatus.ACTIVE, self.details.starts_at)
        if self.status in (CampaignStatus.ACTIVE, CampaignStatus.PAUSED):
            return Transition("complete", CampaignStatus.COMPLETED, self.details.ends_at)
        return None

    def fire(self, timer: DueTimer, now: datetime) -> bool:
        """The scheduler's firing of `timer`: True if it recorded the transition.

        A timer whose time has not come, or that is no longer the campaign's next transition
        (fired already, rescheduled, unscheduled, deleted), changes nothing: firing twice, or
        firing a stale timer, is a no-op rather than an error."""
        if self.is_deleted:
            return False
        pending = self.next_transition()
        now = to_millisecond_utc(now)
        if pending is None or pending.action != timer.action or pending.at != timer.target_at:
            return False
        if now < timer.due_at:
            return False
        _sources, target, event = _LIFECYCLE[timer.action]
        lateness = max(timedelta(0), now - timer.due_at)
        firing = TimerFiring(
            timer_id=timer.timer_id, due_at=timer.due_at, lateness_ms=lateness // timedelta(milliseconds=1)
        )
        self.status = target
        self.updated_at = now
        self._record(event(timer=firing), now, causation_id=timer.timer_id)
        return True

    def due_timer(self) -> DueTimer | None:
        """The durable timer of the next transition, as the pending events leave the campaign."""
        pending = self.next_transition()
        if pending is None:
            return None
        return DueTimer(
            campaign_id=self.id,
            timer_id=timer_id(self.id, self.version, pending.action),
            action=pending.action,
            target_at=pending.at,
            due_at=max(pending.at, self.timer_set_at()),
        )

    def timer_set_at(self) -> datetime:
        """When the timer `due_timer` names was set: a timer is never due before it was set."""
        return self.pending_events[-1].occurred_at if self.pending_events else self.updated_at

    def moves_timer(self) -> bool:
        """Whether the pending events may change the next transition (the timer must be rewritten)."""
        for event in self.pending_events:
            payload = event.payload
            if isinstance(payload, _TIMER_EVENTS):
                return True
            if isinstance(payload, CampaignUpdated) and (
                payload.starts_at is not None or payload.ends_at is not None
            ):
                return True
        return False

    def delete(self, now: datetime) -> None:
        """Allowed from any state; leaves a tombstone event."""
        self._ensure_exists()
        now = to_millisecond_utc(now)
        self.status = CampaignStatus.DELETED
        self.updated_at = now
        self._record(CampaignDeleted(), now)

    def _move(self, action: str, now: datetime, *, ends_must_be_ahead: bool = False) -> None:
        self._ensure_exists()
        sources, target, event = _LIFECYCLE[action]
        if self.status not in sources:
            allowed = ", ".join(sorted(s.value for s in sources))
            raise InvalidTransition(
                f"cannot {action} the campaign: it is {self.status.value} (allowed from {allowed})"
            )
        now = to_millisecond_utc(now)
        if ends_must_be_ahead and self.details.ends_at <= now:
            raise InvalidTransition(f"cannot {action} the campaign: its ends_at has passed")
        self.status = target
        self.updated_at = now
        self._record(event(), now)

    def _ensure_exists(self) -> None:
        if self.is_deleted:
            raise AggregateGone(f"campaign {self.id} was deleted")

    def _merge(self, changes: CampaignChanges) -> CampaignDetails:
        checks = FieldChecks()
        current = self.details
        merged = replace(
            current,
            name=current.name if changes.name is None else _checked_name(changes.name, checks),
            description=(
                current.description
                if changes.description is None
                else _checked_description(changes.description, checks)
            ),
            channel=current.channel if changes.channel is None else _checked_channel(changes.channel, checks),
            starts_at=(
                current.starts_at
                if changes.starts_at is None
                else _checked_instant("starts_at", changes.starts_at, checks)
            ),
            ends_at=(
                current.ends_at
                if changes.ends_at is None
                else _checked_instant("ends_at", changes.ends_at, checks)
            ),
            tags=current.tags if changes.tags is None else _checked_tags(changes.tags, checks),
        )
        if changes.budget_amount is not None or changes.budget_currency is not None:
            merged = replace(
                merged,
                budget=_checked_budget(
                    current.budget.amount if changes.budget_amount is None else changes.budget_amount,
                    current.budget.currency if changes.budget_currency is None else changes.budget_currency,
                    checks,
                ),
            )
        checks.raise_if_any()
        _check_schedule(merged.starts_at, merged.ends_at, checks)
        checks.raise_if_any()
        return merged


def _checked_name(value: str, checks: FieldChecks) -> str:
    name = value.strip()
    if not 1 <= len(name) <= NAME_MAX:
        checks.fail("name", f"must be 1 to {NAME_MAX} characters (not counting surrounding spaces)")
    if has_control_characters(value):
        checks.fail("name", CONTROL_CHARACTERS_REASON)
    return name


def _checked_description(value: str, checks: FieldChecks) -> str:
    if len(value) > DESCRIPTION_MAX:
        checks.fail("description", f"must be at most {DESCRIPTION_MAX} characters")
    return value


def _checked_channel(value: str, checks: FieldChecks) -> str:
    if value not in CHANNELS:
        checks.fail("channel", f"must be one of {', '.join(CHANNELS)}")
    return value


def _checked_budget(amount: str, currency: str, checks: FieldChecks) -> Money:
    if not AMOUNT_PATTERN.match(amount):
        checks.fail(
            "budget.amount",
            "must be a decimal string such as '1500.00' (no sign, up to 15 digits and 4 decimals)",
        )
    if currency not in ISO_4217:
        checks.fail("budget.currency", "must be an ISO 4217 code of three capital letters, such as EUR")
    # Not validated again: a bad value was reported above, and the caller raises before using it.
    return Money.model_construct(amount=amount, currency=currency)


def _checked_instant(field: str, value: datetime, checks: FieldChecks) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        checks.fail(field, "must carry a time zone, e.g. 2027-03-01T00:00:00Z")
        return value
    try:
        return to_millisecond_utc(value)
    except OverflowError:
        # 0001-01-01T00:00:00+00:12 is a valid datetime whose UTC instant is before year 1.
        checks.fail(field, "must fall between the years 1 and 9999 in UTC")
        return value


def _checked_tags(values: list[str], checks: FieldChecks) -> tuple[str, ...]:
    # Tags are labels for filtering: compared case-insensitively, so kept lower-case and unique.
    if len(values) > TAGS_MAX:
        checks.fail("tags", f"at most {TAGS_MAX} tags")
    tags: list[str] = []
    for index, raw in enumerate(values):
        tag = raw.strip().lower()
        if not 1 <= len(tag) <= TAG_MAX:
            checks.fail(f"tags.{index}", f"each tag must be 1 to {TAG_MAX} characters")
        elif tag not in tags:
            tags.append(tag)
    return tuple(tags)


def _check_schedule(starts_at: datetime, ends_at: datetime, checks: FieldChecks) -> None:
    if ends_at <= starts_at:
        checks.fail("ends_at", "must be after starts_at")
