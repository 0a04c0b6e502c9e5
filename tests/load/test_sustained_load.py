"""Steady load on every service as a process (private stack, loopback only).

A bounded mix of commands and queries at a modest, fixed rate (the write side's database does a
few hundred writes a second here). Afterwards: no 5xx at all; every accepted command is one
event in the log, one record on Kafka and one change in the read models; and no service's
memory grew beyond a generous bound. CAMPAIGNS_LOAD_SECONDS sets the duration: 180 s by default
and in `make load`, 60 s inside `make test` (which must stay under 30 minutes).
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from service_runtime.settings import Settings
from service_runtime.tokens import issue_access_token
from tests.load.conftest import REPORT
from tests.support import loopback
from tests.support.ledger import (
    applied_by_stats,
    kafka_messages,
    log_envelopes,
    projected_versions,
    verdict,
    wait_projected,
)
from tests.support.services import RunningServices
from tests.support.traffic import CommandTraffic, paced

DURATION = float(os.environ.get("CAMPAIGNS_LOAD_SECONDS", "180"))
COMMANDS_PER_SECOND = float(os.environ.get("CAMPAIGNS_LOAD_COMMANDS_PER_SECOND", "25"))
QUERIES_PER_SECOND = float(os.environ.get("CAMPAIGNS_LOAD_QUERIES_PER_SECOND", "60"))
WARM_UP_SECONDS = 10.0
SERVICES = ["command-api", "query-api", "relay", "projectors", "workers"]
# RSS at the end may exceed RSS after warm-up by half, plus 64 MiB: allocators and caches
# settle, a leak proportional to traffic does not.
RSS_GROWTH_FACTOR, RSS_GROWTH_SLACK = 1.5, 64 * 1024 * 1024

pytestmark = [pytest.mark.load, pytest.mark.timeout(DURATION + 300)]


def process_group_rss(leader: int) -> int:
    """Resident memory of every process in the leader's process group (uvicorn's workers too)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) != leader:  # pgrp
                continue
            status = (stat.parent / "status").read_text()
        except (OSError, IndexError, ValueError):
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
    return total


def memory(services: RunningServices) -> dict[str, int]:
    return {name: process_group_rss(proc.pid) for name, proc in services.processes.items()}


@dataclass
class QueryTraffic:
    client: httpx.AsyncClient
    commands: CommandTraffic
    admin: dict[str, str]
    statuses: Counter[int] = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)
    transport_errors: int = 0
    transport_error_kinds: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.random = random.Random(11)

    async def one_query(self) -> None:
        known = list(self.commands.campaigns.values())
        roll = self.random.random()
        if not known or roll < 0.1:
            account = self.random.choice(self.commands.accounts)
            path, headers = "/users/me", account.auth
        elif roll < 0.15:
            path, headers = "/stats", self.admin
        elif roll < 0.30:
            campaign = self.random.choice(known)
            path, headers = "/campaigns?limit=20&sort=-created_at", campaign.owner.auth
        elif roll < 0.45:
            # Read your own write: the version the command API just answered.
            campaign = self.random.choice(known)
            path, headers = f"/campaigns/{campaign.id}?min_version={campaign.version}", campaign.owner.auth
        elif roll < 0.50:
            campaign = self.random.choice(known)
            path, headers = f"/campaigns/{campaign.id}/history", campaign.owner.auth
        else:
            campaign = self.random.choice(known)
            path, headers = f"/campaigns/{campaign.id}", campaign.owner.auth
        try:
            response = await self.client.get(path, headers=headers)
        except httpx.HTTPError as error:
            self.transport_errors += 1
            self.transport_error_kinds[f"GET {type(error).__name__}: {error}"[:200]] += 1
            return
        self.statuses[response.status_code] += 1
        if response.status_code >= 500:
            self.server_errors.append(f"GET {path} -> {response.status_code} {response.text[:200]}")


async def test_mixed_load_loses_nothing_and_leaks_nothing(
    private_services: RunningServices, private_settings: Settings, private_redis: Redis
) -> None:
    services, settings, redis = private_services, private_settings, private_redis
    services.settings = services.settings.model_copy(update={"api_workers": 2})
    services.start(SERVICES)
    services.wait_ready()
    limits = httpx.Limits(max_connections=32)
    async with (
        loopback.client(base_url=services.command_url, timeout=30, limits=limits) as commands,
        loopback.client(base_url=services.query_url, timeout=30, limits=limits) as queries,
    ):
        writes = CommandTraffic(commands)
        await writes.sign_up(10)
        admin = {"Authorization": f"Bearer {issue_access_token(settings, 'load-admin', ['user', 'admin'])}"}
        reads = QueryTraffic(queries, writes, admin)

        async def mixed(seconds: float) -> None:
            await asyncio.gather(
                writes.run(seconds, COMMANDS_PER_SECOND, concurrency=8),
                paced(reads.one_query, seconds, QUERIES_PER_SECOND, concurrency=16),
            )

        await mixed(WARM_UP_SECONDS)
        before = memory(services)
        started = time.monotonic()
        await mixed(DURATION)
        elapsed = time.monotonic() - started
        after = memory(services)

    await wait_projected(redis, settings, within=120)
    logged = len(await log_envelopes(settings))
    on_kafka = await kafka_messages(settings)
    applied = await applied_by_stats(redis, settings)
    reached = await projected_versions(redis, settings)
    changes = sum(reached["campaigns"].values()) + sum(reached["users"].values())
    result = await verdict(redis, settings)
    grown = {
        name: f"{before[name] / 2**20:.0f} -> {after[name] / 2**20:.0f} MiB"
        for name in SERVICES
        if name in before
    }
    REPORT.append(
        f"{elapsed:.0f} s, commands {sum(writes.statuses.values())} ({dict(writes.statuses)}), "
        f"queries {sum(reads.statuses.values())} ({dict(reads.statuses)}); accepted {writes.accepted}, "
        f"logged {logged}, on Kafka {on_kafka}, applied {applied}, read-model changes {changes}; RSS {grown}"
    )

    assert writes.server_errors == [] and reads.server_errors == [], (
        writes.server_errors + reads.server_errors
    )[:5]
    assert writes.server_error_count(allow_503=False) == 0, writes.statuses
    assert not any(status >= 500 for status in reads.statuses), reads.statuses
    assert writes.transport_errors == reads.transport_errors == 0, (
        writes.transport_error_kinds,
        reads.transport_error_kinds,
    )
    assert sum(writes.statuses.values()) >= 0.9 * COMMANDS_PER_SECOND * DURATION, writes.statuses
    assert writes.accepted == logged == on_kafka == applied == changes, (
        writes.accepted,
        logged,
        on_kafka,
        applied,
    )
    assert result.lost == 0 and result.duplicates_applied == 0 and result.digests_match, result
    for name in SERVICES:
        bound = before[name] * RSS_GROWTH_FACTOR + RSS_GROWTH_SLACK
        assert after[name] <= bound, f"{name}: RSS grew {grown[name]} over {DURATION:.0f} s"
