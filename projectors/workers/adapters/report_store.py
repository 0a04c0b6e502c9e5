"""Campaign reports in Redis: one hash per campaign, `{prefix}:report:{campaign_id}`, version-guarded.

The query API reads the same hash through `RedisReportStore.load`, so this is the one place that
knows the key and its fields.
"""

from __future__ import annotations

from redis.asyncio import Redis

from projectors.workers.domain.campaign_report import CampaignReport

# Check and write in one step, so a redelivered or older completion never replaces a newer report.
_SAVE = """
local current = tonumber(redis.call('HGET', KEYS[1], 'version'))
if current and current >= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'version', ARGV[1], 'owner_id', ARGV[2], 'report', ARGV[3])
return 1
"""


class RedisReportStore:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix
        self._save = redis.register_script(_SAVE)

    def key(self, campaign_id: str) -> str:
        return f"{self.prefix}:report:{campaign_id}"

    async def save(self, report: CampaignReport) -> bool:
        stored = await self._save(
            keys=[self.key(report.campaign_id)],
            args=[report.version, report.owner_id, report.model_dump_json()],
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
