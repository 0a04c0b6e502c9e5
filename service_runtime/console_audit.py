"""The console's audit trail: every action an operator takes on the console, in MongoDB
(`console_audit`: who, what, when, the result), and counted by `console_actions_total`.

Shared runtime, because two processes write it: the query API records each action as the
operator takes it, and a projectors process that ran a queued operation (a verify, a rebuild)
completes that line with the operation's result (`finish`, counted by
`console_operations_finished_total`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bson import ObjectId
from bson.errors import InvalidId
from prometheus_client import Counter
from pymongo import DESCENDING
from pymongo.asynchronous.database import AsyncDatabase

COLLECTION = "console_audit"
ACTIONS = Counter("console_actions_total", "Actions taken on the operator console", ["action", "result"])
FINISHED = Counter(
    "console_operations_finished_total",
    "Console operations (verify, rebuild) run to their end by a projectors process",
    ["action", "result"],
)


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

    async def finish(self, audit_id: str, action: str, result: str, detail: dict[str, Any]) -> bool:
        """Complete a queued action's line with its outcome (`detail` merged into the line's);
        False when no such queued line exists (already finished, or not a valid id)."""
        FINISHED.labels(action, result_label(result)).inc()
        try:
            key = ObjectId(audit_id)
        except (InvalidId, TypeError):
            return False
        fields: dict[str, Any] = {"result": result, "finished_at": datetime.now(UTC)}
        fields.update({f"detail.{name}": value for name, value in detail.items()})
        # Only a line still queued: a second finisher (a redelivered request) changes nothing.
        updated = await self.collection.update_one(
            {"_id": key, "action": action, "result": "queued"}, {"$set": fields}
        )
        return updated.modified_count == 1

    async def recent(self, limit: int) -> list[dict[str, Any]]:
        """The newest `limit` actions, newest first."""
        cursor = self.collection.find({}).sort([("at", DESCENDING), ("_id", DESCENDING)]).limit(limit)
        return [_line(doc) async for doc in cursor]

    async def last_finished(self, action: str) -> dict[str, Any] | None:
        """The newest line of `action` that has an outcome (neither queued nor refused), or None."""
        doc = await self.collection.find_one(
            {"action": action, "result": {"$nin": ["queued", "refused"]}},
            sort=[("at", DESCENDING), ("_id", DESCENDING)],
        )
        return _line(doc) if doc else None


def _line(doc: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": str(doc["_id"]),
        "user_id": doc.get("user_id"),
        "email": doc.get("email"),
        "action": doc.get("action"),
        "target": doc.get("target") or {},
        "result": doc.get("result"),
        "at": _iso(doc.get("at")),
        "finished_at": _iso(doc.get("finished_at")),
        "detail": doc.get("detail") or {},
    }


def _iso(at: Any) -> str | None:
    if not isinstance(at, datetime):
        return None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    text: str = at.isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")
