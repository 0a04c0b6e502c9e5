"""Campaign reports (`reports.CampaignReport`) in Redis: one version-guarded hash per campaign.

The report worker stores them, the query API serves them: both through `ReportStore`, so the
key and its fields are known here only.
"""

from __future__ import annotations

from redis.asyncio import Redis

from readmodels.keyspace import report_key
from readmodels.scripts import save_report_script


class ReportStore:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix

    def key(self, campaign_id: str) -> str:
        return report_key(self.prefix, campaign_id)

    async def save(self, campaign_id: str, version: int, owner_id: str, report_json: str | bytes) -> bool:
        """Store the report unless one of this version or a newer one is stored already."""
        stored = await save_report_script().run(
            self.redis, [self.key(campaign_id)], [version, owner_id, report_json]
        )
        return bool(stored)

    async def load(self, campaign_id: str) -> tuple[str, bytes] | None:
        """(owner id, the report's JSON) or None when the campaign has no report."""
        owner, report = await self.redis.hmget(self.key(campaign_id), ["owner_id", "report"])
        if owner is None or report is None:
            return None
        owner_id = owner.decode() if isinstance(owner, bytes) else str(owner)
        body = report if isinstance(report, bytes) else str(report).encode()
        return owner_id, body
