"""The query API as it is deployed: uvicorn with two worker processes, all state in Redis."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from projectors.entrypoints.projectors import Projectors
from service_runtime.settings import Settings
from service_runtime.tokens import issue_access_token
from tests.integration.read_side.conftest import EventProducer, wait_records, wait_until
from tests.integration.read_side.workload import new_campaign
from tests.support import loopback
from tests.support.services import free_port, settings_env
from tests.support.stack import REPO


@pytest.fixture
def two_workers(settings: Settings, tmp_path: Path) -> Iterator[str]:
    served = settings.model_copy(update={"query_api_port": free_port(), "local_dir": str(tmp_path)})
    log = (tmp_path / "query-api.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "launcher", "serve", "query-api", "--workers", "2"],
        cwd=REPO,
        env={**settings_env(served), "PYTHONUNBUFFERED": "1"},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield f"http://127.0.0.1:{served.query_api_port}"
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


async def test_every_worker_wakes_its_min_version_reads_from_the_shared_notifications(
    settings: Settings,
    redis: Redis,
    producer: EventProducer,
    projectors: Projectors,
    two_workers: str,
    tmp_path: Path,
) -> None:
    campaign = new_campaign("alice")
    await producer.publish(campaign.events)
    await wait_records(redis, settings, "campaigns", 1)
    auth = {"Authorization": f"Bearer {issue_access_token(settings, 'alice', ['user'])}"}

    async def ready() -> bool:
        try:
            async with loopback.client(base_url=two_workers, timeout=2) as client:
                return (await client.get("/health/ready")).status_code == 200
        except httpx.HTTPError:
            return False

    await wait_until(ready, 30, "the query API to start")

    # One connection per request, so the two workers share the load. Which worker accepts a
    # connection is the kernel's choice, so rounds go on until both have served waiting reads.
    async def read_version(version: int) -> httpx.Response:
        async with loopback.client(base_url=two_workers, timeout=10) as client:
            return await client.get(
                f"/campaigns/{campaign.aggregate_id}", params={"min_version": version}, headers=auth
            )

    def served_by() -> set[str]:
        # Each worker process keeps its own request-counter file.
        files = (tmp_path / "metrics" / "query-api").glob("counter_*.db")
        return {path.stem.rsplit("_", 1)[1] for path in files}

    lifecycle = ["CampaignActivated", "CampaignPaused"]
    version = 1
    for round_ in range(8):
        version += 1
        reads = [asyncio.create_task(read_version(version)) for _ in range(16)]
        await asyncio.sleep(0.5)  # let the reads reach the workers and wait there
        assert not any(r.done() for r in reads)
        event_type = lifecycle[round_ % 2]
        await producer.publish([campaign.then(event_type)])
        responses = await asyncio.gather(*reads)

        assert [r.status_code for r in responses] == [200] * 16
        assert {r.json()["version"] for r in responses} == {version}
        assert {r.json()["status"] for r in responses} == {
            "active" if event_type == lifecycle[0] else "paused"
        }
        if len(served_by()) == 2:
            break
    assert len(served_by()) == 2, "every round landed on one worker"
