"""The commands the write side accepts, as small immutable records."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from command_api.domain.campaign import Actor, CampaignChanges, DueTimer


@dataclass(frozen=True)
class RegisterUser:
    email: str
    password: str
    name: str
    client: str = "unknown"  # the caller's network address, for throttling


@dataclass(frozen=True)
class LogIn:
    email: str
    password: str
    client: str  # the caller's network address, for throttling
    device: str | None = None  # the device cookie a previous successful login set


@dataclass(frozen=True)
class RefreshSession:
    refresh_token: str


@dataclass(frozen=True)
class LogOut:
    refresh_token: str


@dataclass(frozen=True)
class LogOutEverywhere:
    user_id: str


@dataclass(frozen=True)
class ChangePassword:
    user_id: str  # the caller, from their access token
    current_password: str
    new_password: str
    client: str  # the caller's network address, for throttling the current-password check
    device: str | None = None  # the device cookie a previous successful login set


@dataclass(frozen=True)
class ChangeRoles:
    email: str
    admin: bool  # True: grant the admin role; False: revoke it


@dataclass(frozen=True)
class CreateCampaign:
    actor: Actor
    name: str
    description: str
    channel: str
    budget_amount: str
    budget_currency: str
    starts_at: datetime
    ends_at: datetime
    tags: list[str]
    idempotency_key: str | None = None


@dataclass(frozen=True)
class UpdateCampaign:
    actor: Actor
    campaign_id: str
    expected_version: int | None
    changes: CampaignChanges


@dataclass(frozen=True)
class ChangeCampaignStatus:
    actor: Actor
    campaign_id: str
    action: str  # one of command_api.domain.campaign.LIFECYCLE_ACTIONS
    expected_version: int | None = None


@dataclass(frozen=True)
class DeleteCampaign:
    actor: Actor
    campaign_id: str
    expected_version: int | None = None


@dataclass(frozen=True)
class FireDueTransition:
    """The scheduler's command: fire this timer, deciding at `now` (the scheduler's clock)."""

    timer: DueTimer
    now: datetime


@dataclass(frozen=True)
class FireDueTransitions:
    """Several due timers fired in one transaction (a burst of them due at the same moment)."""

    timers: list[DueTimer]
    now: datetime
