"""How aggregates and tokens are kept as MongoDB documents, and read back."""

from __future__ import annotations

from typing import Any

from command_api.adapters.mongo_schema import TIMER
from command_api.application.ports import CommandResult, IdempotentOutcome
from command_api.domain.campaign import Campaign, CampaignDetails, DueTimer
from command_api.domain.refresh_token import RefreshToken
from command_api.domain.user import User
from events.types import Budget as Money
from events.types import CampaignStatus

Document = dict[str, Any]


def campaign_document(campaign: Campaign, timer: DueTimer | None = None) -> Document:
    """The campaign's state document; with its durable timer when `timer` is given."""
    details = campaign.details
    document = {
        "_id": campaign.id,
        "owner_id": campaign.owner_id,
        "name": details.name,
        "description": details.description,
        "channel": details.channel,
        "budget": {"amount": details.budget.amount, "currency": details.budget.currency},
        "starts_at": details.starts_at,
        "ends_at": details.ends_at,
        "tags": list(details.tags),
        "status": campaign.status.value,
        "version": campaign.version,
        "created_at": campaign.created_at,
        "updated_at": campaign.updated_at,
    }
    if timer is not None:
        document[TIMER] = timer_document(timer)
    return document


def campaign_from_document(doc: Document) -> Campaign:
    return Campaign(
        id=doc["_id"],
        version=doc["version"],
        owner_id=doc["owner_id"],
        details=CampaignDetails(
            name=doc["name"],
            description=doc["description"],
            channel=doc["channel"],
            budget=Money(amount=doc["budget"]["amount"], currency=doc["budget"]["currency"]),
            starts_at=doc["starts_at"],
            ends_at=doc["ends_at"],
            tags=tuple(doc["tags"]),
        ),
        status=CampaignStatus(doc["status"]),
        created_at=doc["created_at"],
        updated_at=doc["updated_at"],
    )


def timer_document(timer: DueTimer) -> Document:
    """A campaign's pending transition, as its document's `timer` field holds it (at most one
    timer a campaign)."""
    return {
        "timer_id": timer.timer_id,
        "action": timer.action,
        "target_at": timer.target_at,
        "due_at": timer.due_at,
    }


def due_timer_from_document(doc: Document) -> DueTimer:
    """The timer of a campaign document (read with its `timer` field)."""
    timer = doc[TIMER]
    return DueTimer(
        campaign_id=doc["_id"],
        timer_id=timer["timer_id"],
        action=timer["action"],
        target_at=timer["target_at"],
        due_at=timer["due_at"],
    )


def user_document(user: User) -> Document:
    return {
        "_id": user.id,
        "email": user.email,
        "name": user.name,
        "password_hash": user.password_hash,
        "roles": list(user.roles),
        "created_at": user.created_at,
        "last_login_at": user.last_login_at,
        "version": user.version,
    }


def user_from_document(doc: Document) -> User:
    return User(
        id=doc["_id"],
        version=doc["version"],
        email=doc["email"],
        name=doc["name"],
        password_hash=doc["password_hash"],
        roles=tuple(doc["roles"]),
        created_at=doc["created_at"],
        last_login_at=doc.get("last_login_at"),
    )


def refresh_token_document(token: RefreshToken) -> Document:
    return {
        "_id": token.token_hash,
        "family_id": token.family_id,
        "user_id": token.user_id,
        "issued_at": token.issued_at,
        "expires_at": token.expires_at,
        "used_at": token.used_at,
        "revoked_at": token.revoked_at,
        "family_expires_at": token.family_expires_at,
    }


def refresh_token_from_document(doc: Document) -> RefreshToken:
    return RefreshToken(
        token_hash=doc["_id"],
        family_id=doc["family_id"],
        user_id=doc["user_id"],
        issued_at=doc["issued_at"],
        expires_at=doc["expires_at"],
        used_at=doc.get("used_at"),
        revoked_at=doc.get("revoked_at"),
        family_expires_at=doc.get("family_expires_at"),
    )


def idempotency_id(scope: str, key: str) -> str:
    # Scopes are user ids (UUIDs, no colon), so the pair is unambiguous.
    return f"{scope}:{key}"


def idempotency_document(outcome: IdempotentOutcome) -> Document:
    return {
        "_id": idempotency_id(outcome.scope, outcome.key),
        "scope": outcome.scope,
        "key": outcome.key,
        "fingerprint": outcome.fingerprint,
        "result": {"id": outcome.result.id, "version": outcome.result.version},
        "created_at": outcome.created_at,
    }


def idempotency_from_document(doc: Document) -> IdempotentOutcome:
    return IdempotentOutcome(
        scope=doc["scope"],
        key=doc["key"],
        fingerprint=doc["fingerprint"],
        result=CommandResult(id=doc["result"]["id"], version=doc["result"]["version"]),
        created_at=doc["created_at"],
    )
