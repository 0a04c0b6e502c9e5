"""Campaign commands: create (idempotently), edit, move through the lifecycle, delete; and the
scheduler's firing of a due transition, through the same unit of work and version check."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import fields

import orjson
from pydantic import BaseModel

from command_api.application.commands import (
    ChangeCampaignStatus,
    CreateCampaign,
    DeleteCampaign,
    FireDueTransition,
    FireDueTransitions,
    UpdateCampaign,
)
from command_api.application.errors import (
    ConcurrencyConflict,
    IdempotencyKeyReused,
    IdempotencyKeyTaken,
    NotFound,
    StaleVersion,
    VersionRequired,
)
from command_api.application.live_cap import LiveCampaignCap
from command_api.application.ports import CommandResult, IdempotentOutcome, UnitOfWork
from command_api.domain.campaign import SCHEDULER_ACTOR_ID, Actor, Campaign, CampaignDetails
from command_api.domain.errors import AggregateGone
from events.envelope import utc_now

# A command without If-Match is decided again on the fresh state when another one won the race.
CONFLICT_ATTEMPTS = 5
# A batch of firings that lost a version check is tried once more on fresh reads before each of
# its timers is fired on its own.
BATCH_ATTEMPTS = 2


async def create_campaign(
    command: CreateCampaign, uow: UnitOfWork, live_cap: LiveCampaignCap | None = None
) -> CommandResult:
    details = CampaignDetails.parse(
        name=command.name,
        description=command.description,
        channel=command.channel,
        budget_amount=command.budget_amount,
        budget_currency=command.budget_currency,
        starts_at=command.starts_at,
        ends_at=command.ends_at,
        tags=command.tags,
    )
    scope = command.actor.user_id
    key = command.idempotency_key
    # Only a request with an Idempotency-Key is remembered, so only its body is fingerprinted.
    fingerprint = _fingerprint(details) if key is not None else ""
    async with uow:
        if key is not None:
            replay = await _replay(uow, scope, key, fingerprint)
            if replay is not None:
                return replay
        # Checked before the insert, outside its transaction: concurrent creates may pass it
        # together, so the cap can be overshot by the user's in-flight requests and by what the
        # cap's tally has not seen yet (live_cap.py; both bounded by the command rate).
        if live_cap is not None:
            await live_cap.admit(scope, lambda limit: uow.campaigns.count_live(scope, limit))
        campaign = Campaign.create(
            campaign_id=str(uuid.uuid4()), owner_id=scope, details=details, now=utc_now()
        )
        uow.campaigns.add(campaign)
        result = CommandResult(campaign.id, campaign.version)
        if key is not None:
            uow.idempotency.add(IdempotentOutcome(scope, key, fingerprint, result, created_at=utc_now()))
        try:
            await uow.commit(actor_id=command.actor.user_id)
        except IdempotencyKeyTaken:
            # A concurrent request with the same key won; answer as it did (or refuse a new body).
            assert key is not None
            replay = await _replay(uow, scope, key, fingerprint)
            if replay is None:
                raise
            return replay
        if live_cap is not None:
            live_cap.created(scope)
        return result


async def update_campaign(command: UpdateCampaign, uow: UnitOfWork) -> CommandResult:
    if command.expected_version is None:
        raise VersionRequired("PATCH needs If-Match with the version the edit was made on")

    async def attempt() -> CommandResult:
        async with uow:
            campaign = await _changeable(uow, command.campaign_id, command.actor)
            _check_version(campaign, command.expected_version)
            now = utc_now()
            campaign.update(command.changes, now)
            return await _save(uow, campaign, command.actor)

    return await _decided_on_fresh_state(attempt, command.expected_version)


async def change_campaign_status(command: ChangeCampaignStatus, uow: UnitOfWork) -> CommandResult:
    async def attempt() -> CommandResult:
        async with uow:
            campaign = await _changeable(uow, command.campaign_id, command.actor)
            _check_version(campaign, command.expected_version)
            campaign.apply_lifecycle(command.action, utc_now())
            return await _save(uow, campaign, command.actor)

    return await _decided_on_fresh_state(attempt, command.expected_version)


async def delete_campaign(command: DeleteCampaign, uow: UnitOfWork) -> CommandResult:
    async def attempt() -> CommandResult:
        async with uow:
            campaign = await _changeable(uow, command.campaign_id, command.actor)
            _check_version(campaign, command.expected_version)
            campaign.delete(utc_now())
            return await _save(uow, campaign, command.actor)

    return await _decided_on_fresh_state(attempt, command.expected_version)


async def fire_due_transition(command: FireDueTransition, uow: UnitOfWork) -> CommandResult | None:
    """Record the transition `command.timer` stands for, or nothing if it is stale or not due.

    The event names the scheduler as actor and the timer as causation. A concurrent command (or
    another scheduler firing the same timer) loses the version check and is decided again on
    the fresh state, where the timer is no longer pending: one event, however often it fires."""
    timer = command.timer

    async def attempt() -> CommandResult | None:
        async with uow:
            campaign = await uow.campaigns.get(timer.campaign_id)
            if campaign is None or not campaign.fire(timer, command.now):
                return None
            uow.campaigns.save(campaign)
            await uow.commit(actor_id=SCHEDULER_ACTOR_ID)
            return CommandResult(campaign.id, campaign.version)

    for _ in range(CONFLICT_ATTEMPTS - 1):
        try:
            return await attempt()
        except ConcurrencyConflict:
            continue
    return await attempt()


async def fire_due_transitions(command: FireDueTransitions, uow: UnitOfWork) -> list[CommandResult | None]:
    """Fire a batch of timers in one transaction: one result per timer, None where it fired nothing.

    Each campaign still passes its own version check; should any of them lose it (a command on
    that campaign committed since the campaigns were read), the batch commits nothing and is
    decided once more on fresh reads; should that lose too, every timer is fired on its own,
    each decided again on fresh state. (The scheduler's campaigns may be read well before the
    firing, with its due timers: a command meanwhile then costs the batch one more try, not a
    transaction per timer.) One commit for a burst of timers due together, and the campaigns
    saved together (`save_many`: one version-checked update of all those that changed alike),
    is what lets the scheduler keep up with them: each statement and each commit costs the
    server more than the write in it."""
    timers = command.timers
    for _ in range(BATCH_ATTEMPTS):
        async with uow:
            campaigns = await uow.campaigns.get_many([t.campaign_id for t in timers])
            results: list[CommandResult | None] = []
            fired: list[Campaign] = []
            for timer in timers:
                campaign = campaigns.get(timer.campaign_id)
                if campaign is None or not campaign.fire(timer, command.now):
                    results.append(None)
                    continue
                fired.append(campaign)
                results.append(CommandResult(campaign.id, campaign.version))
            if not fired:
                return results
            uow.campaigns.save_many(fired)
            try:
                await uow.commit(actor_id=SCHEDULER_ACTOR_ID)
                return results
            except ConcurrencyConflict:
                continue
    return [await fire_due_transition(FireDueTransition(timer, command.now), uow) for timer in timers]


async def _changeable(uow: UnitOfWork, campaign_id: str, actor: Actor) -> Campaign:
    campaign = await uow.campaigns.get(campaign_id)
    # Someone else's campaign answers exactly like a missing one, so ids reveal nothing.
    if campaign is None or campaign.is_deleted or not campaign.may_be_changed_by(actor):
        raise NotFound(f"no campaign {campaign_id}")
    return campaign


def _check_version(campaign: Campaign, expected: int | None) -> None:
    if expected is not None and campaign.version != expected:
        raise StaleVersion(current=campaign.version)


async def _save(uow: UnitOfWork, campaign: Campaign, actor: Actor) -> CommandResult:
    if campaign.pending_events:
        uow.campaigns.save(campaign)
        await uow.commit(actor_id=actor.user_id)
    return CommandResult(campaign.id, campaign.version)


async def _decided_on_fresh_state(
    attempt: Callable[[], Awaitable[CommandResult]], expected_version: int | None
) -> CommandResult:
    for _ in range(CONFLICT_ATTEMPTS - 1):
        try:
            return await attempt()
        except ConcurrencyConflict:
            if expected_version is not None:
                # The caller decided on that version, and it is gone: theirs to re-read.
                raise StaleVersion() from None
        except AggregateGone:
            raise NotFound("the campaign was deleted") from None
    try:
        return await attempt()
    except AggregateGone:
        raise NotFound("the campaign was deleted") from None


async def _replay(uow: UnitOfWork, scope: str, key: str, fingerprint: str) -> CommandResult | None:
    prior = await uow.idempotency.get(scope, key)
    if prior is None:
        return None
    if prior.fingerprint != fingerprint:
        raise IdempotencyKeyReused("this Idempotency-Key was used with a different request body")
    return prior.result


def _fingerprint(details: CampaignDetails) -> str:
    """The request as the domain understood it, so equivalent JSON gives the same fingerprint.

    The fields as a plain dict, each value as it is: `dataclasses.asdict` made the same JSON but
    deep-copied every value first (the budget model, the datetimes, the tags), ~55 µs a create
    against ~5 (a fingerprint is stored with its key, so the bytes must not change: a unit test
    pins them)."""
    plain = {field.name: getattr(details, field.name) for field in fields(details)}
    canonical = orjson.dumps(plain, default=_plain, option=orjson.OPT_SORT_KEYS | orjson.OPT_UTC_Z)
    return hashlib.sha256(canonical).hexdigest()


def _plain(value: object) -> object:
    """Values orjson does not know (the budget, a pydantic model) as plain data."""
    if isinstance(value, BaseModel):
        return value.model_dump()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
