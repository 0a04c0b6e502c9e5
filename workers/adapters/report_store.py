"""Campaign reports stored where the query API reads them (`readmodels.reports`)."""

from __future__ import annotations

from redis.asyncio import Redis

from readmodels.report_store import ReportStore
from readmodels.reports import CampaignReport


class RedisReportStore:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self.store = ReportStore(redis, prefix)

    async def save(self, report: CampaignReport) -> bool:
        return await self.store.save(
            report.campaign_id, report.version, report.owner_id, report.model_dump_json()
        )
