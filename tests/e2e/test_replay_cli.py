"""End to end: `campaigns replay` as a process against the running services, under live traffic."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections import Counter

import orjson

from tests.support import loopback
from tests.support.factories import campaign_body
from tests.support.services import RunningServices, settings_env
from tests.support.stack import REPO

ALL = ["command-api", "query-api", "relay", "projectors"]
CAMPAIGN = campaign_body(
    name="Replayed",
    description="built again from the log",
    channel="sms",
    budget={"amount": "120.50", "currency": "EUR"},
    tags=["replay"],
)


async def campaigns_cli(services: RunningServices, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "launcher", "replay", *args],
        cwd=REPO,
        env=settings_env(services.settings),
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


async def test_a_rebuild_under_traffic_keeps_reads_answering_and_ends_verified(
    services: RunningServices,
) -> None:
    services.start(ALL)
    services.wait_ready()
    async with (
        loopback.client(base_url=services.command_url, timeout=10) as commands,
        loopback.client(base_url=services.query_url, timeout=10) as queries,
    ):
        user = {"email": "replay.e2e@example.com", "password": "correct horse battery 9", "name": "Replay"}
        assert (await commands.post("/auth/register", json=user)).status_code == 201
        login = await commands.post(
            "/auth/login", json={"email": user["email"], "password": user["password"]}
        )
        auth = {"Authorization": f"Bearer {login.json()['access_token']}"}
        versions: dict[str, int] = {}
        for _ in range(12):
            created = await commands.post("/campaigns", json=CAMPAIGN, headers=auth)
            assert created.status_code == 201, created.text
            versions[created.json()["id"]] = created.json()["version"]
        ids = list(versions)
        # Projected before the traffic starts: the reads below are about the rebuild, and a read
        # right after a 201 without min_version may come before the projector (read-your-writes
        # is what min_version is for).
        for campaign_id, version in versions.items():
            seen = await queries.get(
                f"/campaigns/{campaign_id}", params={"min_version": version}, headers=auth
            )
            assert seen.status_code == 200, seen.text
        stop = asyncio.Event()
        reads: Counter[int] = Counter()

        async def change_campaigns() -> None:
            turn = 0
            while not stop.is_set():
                campaign_id = ids[turn % len(ids)]
                action = "activate" if versions[campaign_id] % 2 else "pause"
                answer = await commands.post(f"/campaigns/{campaign_id}/{action}", headers=auth)
                assert answer.status_code == 200, answer.text
                versions[campaign_id] = answer.json()["version"]
                turn += 1

        async def read_campaigns() -> None:
            turn = 0
            while not stop.is_set():
                answer = await queries.get(f"/campaigns/{ids[turn % len(ids)]}", headers=auth)
                reads[answer.status_code] += 1
                turn += 1
                await asyncio.sleep(0.01)

        traffic = [asyncio.create_task(change_campaigns()), asyncio.create_task(read_campaigns())]
        await asyncio.sleep(1)
        rebuilt = await campaigns_cli(services, "rebuild", "all", "--grace-seconds", "1")
        await asyncio.sleep(1)
        stop.set()
        await asyncio.gather(*traffic)

        assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
        assert "live generation is now campaigns.2 (was campaigns.1)" in rebuilt.stderr
        assert set(reads) == {200}, reads
        for campaign_id, version in versions.items():
            read = await queries.get(
                f"/campaigns/{campaign_id}", params={"min_version": version}, headers=auth
            )
            assert read.status_code == 200, read.text
            assert read.json()["version"] == version

    verified = await campaigns_cli(services, "verify", "all")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    inspected = await campaigns_cli(services, "inspect", ids[0], "--as-of-version", "1")
    assert inspected.returncode == 0, inspected.stderr
    first = orjson.loads(inspected.stdout)
    assert (first["version"], first["state"]["status"], first["state"]["name"]) == (1, "draft", "Replayed")
