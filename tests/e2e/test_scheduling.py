"""Scheduling end to end through the running services: a scheduled campaign starts and ends by
itself, read on the query API; a scheduler killed before a due time fires it exactly once when it
comes back; two scheduler processes never fire anything twice."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from pymongo import AsyncMongoClient

from service_runtime.settings import Settings
from tests.support import loopback
from tests.support.services import RunningServices, free_port

PIPELINE = ["command-api", "query-api", "relay", "projectors"]
PASSWORD = "correct horse battery 9"


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def campaign(starts_at: datetime, ends_at: datetime) -> dict[str, Any]:
    return {
        "name": "Timed launch",
        "channel": "email",
        "budget": {"amount": "10.00", "currency": "EUR"},
        "starts_at": iso(starts_at),
        "ends_at": iso(ends_at),
    }


async def until(check: Callable[[], Awaitable[bool]], within: float) -> float:
    """Wait for a condition; the seconds it took (fails after `within`)."""
    started = time.monotonic()
    while not await check():
        if time.monotonic() - started > within:
            raise AssertionError(f"not so within {within} s")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def signed_in(commands: httpx.AsyncClient, email: str) -> dict[str, str]:
    registered = await commands.post(
        "/auth/register", json={"email": email, "password": PASSWORD, "name": "S"}
    )
    assert registered.status_code == 201, registered.text
    login = await commands.post("/auth/login", json={"email": email, "password": PASSWORD})
    assert login.status_code == 200, login.text
    return {"Authorization": f"Bearer {login.json()['access_token']}"}


async def test_a_scheduled_campaign_starts_and_ends_by_itself_with_the_scheduler_as_actor(
    services: RunningServices,
) -> None:
    services.start([*PIPELINE, "scheduler"])
    services.wait_ready()
    async with (
        loopback.client(base_url=services.command_url, timeout=10) as commands,
        loopback.client(base_url=services.query_url, timeout=10) as queries,
    ):
        auth = await signed_in(commands, "timed@example.com")
        now = datetime.now(UTC)
        starts_at, ends_at = now + timedelta(seconds=2), now + timedelta(seconds=4)
        created = await commands.post("/campaigns", json=campaign(starts_at, ends_at), headers=auth)
        assert created.status_code == 201, created.text
        campaign_id = created.json()["id"]
        scheduled = await commands.post(f"/campaigns/{campaign_id}/schedule", headers=auth)
        assert scheduled.status_code == 200, scheduled.text
        scheduled_at = time.monotonic()

        read = await queries.get(
            f"/campaigns/{campaign_id}", params={"min_version": scheduled.json()["version"]}, headers=auth
        )
        assert read.status_code == 200, read.text
        if read.json()["status"] == "scheduled":  # unless the start came first (a slow machine)
            assert read.json()["next_transition"]["to"] == "active"
            listed = await queries.get("/campaigns", params={"status": "scheduled"}, headers=auth)
            assert [c["id"] for c in listed.json()["items"]] == [campaign_id]

        async def status_is(expected: str) -> bool:
            response = await queries.get(f"/campaigns/{campaign_id}", headers=auth)
            return response.status_code == 200 and response.json()["status"] in expected

        # Started within 3 s of being scheduled (due 2 s after it).
        await until(
            lambda: status_is(("active", "completed")), within=3.0 - (time.monotonic() - scheduled_at)
        )
        await until(lambda: status_is("completed"), within=10.0)
        body = (await queries.get(f"/campaigns/{campaign_id}", headers=auth)).json()
        assert body["next_transition"] is None
        # Against the `ends_at` sent (to the millisecond), not the microseconds computed here.
        assert datetime.fromisoformat(body["updated_at"]) >= datetime.fromisoformat(iso(ends_at))

        history = (await queries.get(f"/campaigns/{campaign_id}/history", headers=auth)).json()["items"]
        fired = [e for e in history if e["event_type"] in ("CampaignActivated", "CampaignCompleted")]
        assert [e["event_type"] for e in fired] == ["CampaignActivated", "CampaignCompleted"]
        assert {e["actor_id"] for e in fired} == {"scheduler"}
        assert all(e["causation_id"] == e["payload"]["timer"]["timer_id"] for e in fired)


async def mongo_events(settings: Settings, event_type: str) -> list[dict[str, Any]]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(settings.mongo_url, tz_aware=True)
    try:
        return await client[settings.mongo_db]["events"].find({"event_type": event_type}).to_list()
    finally:
        await client.close()


async def test_a_scheduler_killed_before_the_due_time_fires_it_exactly_once_after_restart(
    services: RunningServices,
) -> None:
    services.start(["command-api", "scheduler"])
    services.wait_ready()
    async with loopback.client(base_url=services.command_url, timeout=10) as commands:
        auth = await signed_in(commands, "killed@example.com")
        now = datetime.now(UTC)
        due = now + timedelta(seconds=2)
        created = await commands.post(
            "/campaigns", json=campaign(due, now + timedelta(hours=1)), headers=auth
        )
        campaign_id = created.json()["id"]
        assert (await commands.post(f"/campaigns/{campaign_id}/schedule", headers=auth)).status_code == 200
    services.stop("scheduler", sig=signal.SIGKILL)

    async def past_due() -> bool:
        return datetime.now(UTC) > due + timedelta(seconds=1)

    await until(past_due, within=10.0)
    assert await mongo_events(services.settings, "CampaignActivated") == []
    services.start(["scheduler"])

    async def activated() -> bool:
        return len(await mongo_events(services.settings, "CampaignActivated")) > 0

    await until(activated, within=20.0)
    await asyncio.sleep(1.0)  # room for a second firing, were there one
    [event] = await mongo_events(services.settings, "CampaignActivated")
    assert event["aggregate_id"] == campaign_id
    assert event["actor_id"] == "scheduler"
    assert event["payload"]["timer"]["lateness_ms"] >= 1000


@pytest.mark.parametrize("count", [40])
async def test_two_scheduler_processes_fire_each_transition_once(
    services: RunningServices, count: int
) -> None:
    services.start(["command-api"])
    services.wait_ready()
    async with loopback.client(base_url=services.command_url, timeout=10) as commands:
        auth = await signed_in(commands, "twice@example.com")
        due = datetime.now(UTC) + timedelta(seconds=8)
        ids = []
        for _ in range(count):
            created = await commands.post(
                "/campaigns", json=campaign(due, due + timedelta(hours=1)), headers=auth
            )
            ids.append(created.json()["id"])
            assert (await commands.post(f"/campaigns/{ids[-1]}/schedule", headers=auth)).status_code == 200
    # Two processes: the second under another name, on its own metrics port.
    services.start(["scheduler"])
    services.processes["scheduler-1"] = services.processes.pop("scheduler")
    services.settings = services.settings.model_copy(update={"scheduler_metrics_port": free_port()})
    services.start(["scheduler"])

    async def all_activated() -> bool:
        return len(await mongo_events(services.settings, "CampaignActivated")) >= count

    await until(all_activated, within=60.0)
    await asyncio.sleep(1.0)
    activations = await mongo_events(services.settings, "CampaignActivated")
    assert sorted(e["aggregate_id"] for e in activations) == sorted(ids)
