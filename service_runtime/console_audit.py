"""The console's audit trail: every action an operator takes on the console, in MongoDB
(`console_audit`: who, what, when, the result), and counted by `console_actions_total`."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Counter
from pymongo import DESCENDING
from pymongo.asynchronous.database import AsyncDatabase

COLLECTION = "console_audit"
ACTIONS = Counter("console_actions_total", "Actions taken on the operator console", ["action", "result"])


@dataclass(frozen=True)
class ConsoleAction:
    user_id: str
    email: str | None
    action: str  # e.g. "dead-letters.redrive"
    target: dict[str, Any]
    result: str  # "ok", "declined", "refused", "failed: ..."
    at: datetime = field(default_factory=lambda: datetime.now(UTC))
    detail: dict[str, Any] = field(default_factory=dict)


def result_label(result: str) -> str:
    """The counter's `result` label: a word, never a message (bounded cardinality)."""
    return result.split(":", 1)[0].strip() or "unknown"


class ConsoleAudit:
    def __init__(self, db: AsyncDatabase[dict[str, Any]]) -> None:
        self.collection = db[COLLECTION]

    async def record(self, action: ConsoleAction) -> str:
        ACTIONS.labels(action.action, result_label(action.result)).inc()
        inserted = await self.collection.insert_one(
            {
                "user_id": action.user_id,
                "email": action.email,
                "action": action.action,
                "target": action.target,
                "result": action.result,
                "at": action.at,
                "detail": action.detail,
            }
        )
        return str(inserted.inserted_id)

    async def recent(self, limit: int) -> list[dict[str, Any]]:
        """The newest `limit` actions, newest first."""
        cursor = self.collection.find({}).sort([("at", DESCENDING), ("_id", DESCENDING)]).limit(limit)
        return [
            {
                "id": str(doc["_id"]),
                "user_id": doc.get("user_id"),
                "email": doc.get("email"),
                "action": doc.get("action"),
                "target": doc.get("target") or {},
                "result": doc.get("result"),
                "at": _iso(doc.get("at")),
                "detail": doc.get("detail") or {},
            }
            async for doc in cursor
        ]


def _iso(at: Any) -> str | None:
    if not isinstance(at, datetime):
        return None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    text: str = at.isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")
