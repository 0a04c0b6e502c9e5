"""What the dead-letter operations remember, in MongoDB.

- `dlq_audit`: one document per replay or purge: who (`actor`), what (`action`, `topic`, the
  refs, the counts), when (`started_at`, `finished_at`) and `result` ("running" while it runs,
  then "ok" or "failed: ..."). Opened before anything changes, so even a crash leaves a trail.
- `dlq_redriven`: one document per re-driven dead letter, `_id` = its ref (unique by
  construction), with the audit record that re-drove it: a second replay skips these.
- `dlq_purged`: one document per dead-letter topic: per partition, the offset below which every
  record is purged (bounded by the partition count, whatever the number of records).
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Any

from pymongo import UpdateOne
from pymongo.asynchronous.database import AsyncDatabase

from deadletters.application.ports import AuditEntry
from deadletters.domain.records import RecordRef

AUDIT = "dlq_audit"
REDRIVEN = "dlq_redriven"
PURGED = "dlq_purged"

Document = dict[str, Any]


class MongoLedger:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.audit = db[AUDIT]
        self.redriven_refs = db[REDRIVEN]
        self.purged = db[PURGED]

    async def purged_below(self, topic: str) -> dict[int, int]:
        found = await self.purged.find_one({"_id": topic})
        if found is None:
            return {}
        return {int(p): int(o) for p, o in found.get("below", {}).items()}

    async def mark_purged(self, topic: str, below: Mapping[int, int], audit_id: str) -> None:
        await self.purged.update_one(
            {"_id": topic},
            {"$max": {f"below.{p}": o for p, o in below.items()}, "$set": {"audit_id": audit_id}},
            upsert=True,
        )

    async def redriven(self, refs: Collection[RecordRef]) -> set[RecordRef]:
        if not refs:
            return set()
        by_text = {str(ref): ref for ref in refs}
        cursor = self.redriven_refs.find({"_id": {"$in": list(by_text)}}, {"_id": 1})
        return {by_text[doc["_id"]] async for doc in cursor}

    async def mark_redriven(self, refs: Collection[RecordRef], audit_id: str, at: datetime) -> None:
        if not refs:
            return
        # Upserts: a batch re-driven again after a crash (at least once) marks it again, no error.
        await self.redriven_refs.bulk_write(
            [
                UpdateOne(
                    {"_id": str(ref)},
                    {"$setOnInsert": {"audit_id": audit_id, "redriven_at": at, "topic": ref.topic}},
                    upsert=True,
                )
                for ref in refs
            ],
            ordered=False,
        )

    async def redrive_of(self, ref: RecordRef) -> dict[str, Any] | None:
        return await self.redriven_refs.find_one({"_id": str(ref)})

    async def open_audit(self, entry: AuditEntry) -> str:
        audit_id = str(uuid.uuid4())
        await self.audit.insert_one(
            {
                "_id": audit_id,
                "action": entry.action,
                "actor": entry.actor,
                "topic": entry.topic,
                "started_at": entry.started_at,
                "result": "running",
                **entry.details,
            }
        )
        return audit_id

    async def close_audit(self, audit_id: str, result: str, details: Mapping[str, Any], at: datetime) -> None:
        await self.audit.update_one(
            {"_id": audit_id}, {"$set": {"result": result, "finished_at": at, **details}}
        )
