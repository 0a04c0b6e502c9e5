"""Write traffic for fault and load tests: real users issuing valid commands at a bounded rate.

Every command the command API accepts (2xx) yields exactly one event, so the count of accepted
commands is the count of events the rest of the system must carry. The driver keeps a model of
each campaign (version, status) to choose commands that should succeed, never sends two commands
for one campaign at once, and records every answer by status.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import httpx

PASSWORD = "a long passphrase for traffic 42"
CHANNELS = ("email", "sms", "push", "social")
NEXT_STEPS = {
    "draft": ("activate", "patch"),
    "active": ("pause", "complete", "patch"),
    "paused": ("activate", "complete", "patch"),
    "completed": ("delete",),
}


def campaign_body(n: int) -> dict[str, object]:
    return {
        "name": f"Traffic campaign {n}",
        "description": "made by the traffic driver",
        "channel": CHANNELS[n % len(CHANNELS)],
        "budget": {"amount": f"{100 + n % 900}.{n % 100:02d}", "currency": ("EUR", "USD", "BRL")[n % 3]},
        "starts_at": "2099-03-01T00:00:00Z",
        "ends_at": "2099-03-31T00:00:00Z",
        "tags": [f"t{n % 7}", "traffic"],
    }


@dataclass
class Account:
    email: str
    user_id: str
    access_token: str
    refresh_token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


@dataclass
class TrackedCampaign:
    id: str
    owner: Account
    version: int
    status: str
    busy: bool = False


@dataclass
class CommandTraffic:
    client: httpx.AsyncClient
    seed: int = 7
    accounts: list[Account] = field(default_factory=list)
    campaigns: dict[str, TrackedCampaign] = field(default_factory=dict)
    statuses: Counter[int] = field(default_factory=Counter)
    accepted: int = 0
    acknowledged: dict[str, int] = field(default_factory=dict)
    server_errors: list[str] = field(default_factory=list)
    transport_errors: int = 0
    transport_error_kinds: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.random = random.Random(self.seed)
        self._created = 0

    # ------------------------------------------------------------------ bookkeeping

    def _note(self, response: httpx.Response) -> bool:
        self.statuses[response.status_code] += 1
        if response.status_code >= 500 and (
            response.status_code != 503
            or not response.headers.get("content-type", "").startswith("application/problem+json")
        ):
            self.server_errors.append(
                f"{response.request.method} {response.request.url.path} -> "
                f"{response.status_code} {response.text[:300]}"
            )
        if response.is_success:
            self.accepted += 1
            return True
        return False

    async def _send(self, method: str, path: str, **kwargs: object) -> httpx.Response | None:
        try:
            response = await self.client.request(method, path, **kwargs)  # type: ignore[arg-type]
        except httpx.HTTPError as error:
            self.transport_errors += 1
            self.transport_error_kinds[f"{method} {type(error).__name__}: {error}"[:200]] += 1
            return None
        self._note(response)
        return response

    @property
    def unavailable(self) -> int:
        return self.statuses[503]

    def server_error_count(self, allow_503: bool) -> int:
        return sum(n for s, n in self.statuses.items() if s >= 500 and not (allow_503 and s == 503))

    # ------------------------------------------------------------------ commands

    async def sign_up(self, count: int) -> list[Account]:
        """Register and log in `count` users (each call two accepted commands)."""
        made = []
        for _ in range(count):
            email = f"traffic-{uuid.uuid4().hex[:12]}@example.com"
            registered = await self._send(
                "POST", "/auth/register", json={"email": email, "password": PASSWORD, "name": "Traffic"}
            )
            assert registered is not None and registered.status_code == 201, registered and registered.text
            account = await self.log_in(email, registered.json()["id"])
            assert account is not None
            made.append(account)
        self.accounts.extend(made)
        return made

    async def log_in(self, email: str, user_id: str) -> Account | None:
        response = await self._send("POST", "/auth/login", json={"email": email, "password": PASSWORD})
        if response is None or response.status_code != 200:
            return None
        body = response.json()
        return Account(email, user_id, body["access_token"], body["refresh_token"])

    async def create(self) -> None:
        owner = self.random.choice(self.accounts)
        self._created += 1
        response = await self._send(
            "POST", "/campaigns", json=campaign_body(self._created), headers=owner.auth
        )
        if response is not None and response.status_code == 201:
            body = response.json()
            self.campaigns[body["id"]] = TrackedCampaign(body["id"], owner, body["version"], "draft")
            self.acknowledged[body["id"]] = body["version"]

    async def advance(self, campaign: TrackedCampaign) -> None:
        step = self.random.choice(NEXT_STEPS[campaign.status])
        auth = campaign.owner.auth
        if step == "patch":
            headers = {**auth, "If-Match": f'"{campaign.version}"'}
            body = {"name": f"Renamed {uuid.uuid4().hex[:6]}", "tags": ["traffic", f"v{campaign.version}"]}
            response = await self._send("PATCH", f"/campaigns/{campaign.id}", json=body, headers=headers)
            new_status = campaign.status
        elif step == "delete":
            response = await self._send("DELETE", f"/campaigns/{campaign.id}", headers=auth)
            new_status = "deleted"
        else:
            response = await self._send("POST", f"/campaigns/{campaign.id}/{step}", headers=auth)
            new_status = {"activate": "active", "pause": "paused", "complete": "completed"}[step]
        if response is None:
            return
        if response.is_success:
            version = campaign.version + 1 if response.status_code == 204 else response.json()["version"]
            self.acknowledged[campaign.id] = max(self.acknowledged.get(campaign.id, 0), version)
            campaign.version, campaign.status = version, new_status
            if new_status == "deleted":
                self.campaigns.pop(campaign.id, None)
        elif response.status_code == 412 and response.headers.get("etag"):
            campaign.version = int(response.headers["etag"].strip('"'))
        elif response.status_code in (404, 409):
            # Our model of it is wrong (a 503'd command that did commit): stop touching it.
            self.campaigns.pop(campaign.id, None)

    async def one_command(self) -> None:
        idle = [c for c in self.campaigns.values() if not c.busy]
        roll = self.random.random()
        if roll < 0.05:
            account = self.random.choice(self.accounts)
            fresh = await self.log_in(account.email, account.user_id)
            if fresh is not None:
                account.access_token, account.refresh_token = fresh.access_token, fresh.refresh_token
            return
        if not idle or roll < 0.35:
            await self.create()
            return
        campaign = self.random.choice(idle)
        campaign.busy = True
        try:
            await self.advance(campaign)
        finally:
            campaign.busy = False

    async def run(self, seconds: float, rate: float, concurrency: int = 8) -> None:
        """Commands at `rate` per second for `seconds`, at most `concurrency` in flight."""
        await paced(self.one_command, seconds, rate, concurrency)


async def paced(action, seconds: float, rate: float, concurrency: int) -> int:  # type: ignore[no-untyped-def]
    """Start `action()` `rate` times a second for `seconds`, never more than `concurrency` at once.

    While every slot is taken (a server is slow or down) starts are skipped, not queued, so
    the rate never bursts to catch up afterwards. Returns how many were started.
    """
    slots = asyncio.Semaphore(concurrency)
    running: set[asyncio.Task[None]] = set()
    interval = 1.0 / rate
    started = 0
    end = time.monotonic() + seconds
    next_at = time.monotonic()

    async def one() -> None:
        try:
            await action()
        finally:
            slots.release()

    while time.monotonic() < end:
        await slots.acquire()
        task = asyncio.create_task(one())
        running.add(task)
        task.add_done_callback(running.discard)
        started += 1
        next_at = max(next_at + interval, time.monotonic())
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
    if running:
        await asyncio.gather(*running)
    return started
