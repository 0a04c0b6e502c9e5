"""Slots of the read side's Redis Cluster moved under steady traffic (issue 16.5): no client sees it.

The whole system runs: commands through the command API, events through the relay and Kafka
(the private cluster's 3 nodes), the projectors writing into a private Redis Cluster of this
test's own (3 primaries + 3 replicas, `tests/support/private_redis_cluster.py`; never the shared
7000-7005), reads through the query API. While commands and reads keep coming,
`redis-cli --cluster reshard` moves SLOTS slots, the lowest ones (which hold the first buckets'
hash tags, so documents, indexes and stats counters being written and read) from one primary to
another, one key per MIGRATE so slots stay half-moved for a while, then moves them back.

A read or write that meets a slot being moved gets ASK (the key has left), TRYAGAIN (a
script's keys are on both sides) or MOVED (the slot is gone): the clients retry, so:
- the read clients see no error: every read of a campaign that exists answers 200 at its version,
  every list page holds exactly the owner's campaigns, no 5xx, no transport error;
- the command API answers no 5xx (its login throttle lives in the same Redis);
- nothing is dead-lettered, every accepted command's version is readable afterwards, the read
  models equal a clean rebuild of the log and `campaigns replay verify all` passes.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from redis.crc import key_slot

from query_api.adapters.redis_multiplexer import ClusterMultiplexer
from readmodels.keyspace import CampaignKeys, bucket_segments, generation_base
from readmodels.scripts import LuaScript, pipelined
from service_runtime.redis_client import connect_redis
from service_runtime.tokens import issue_access_token
from tests.chaos_cluster.test_cluster_faults import RATE, ClusterRun
from tests.support import loopback
from tests.support.ledger import wait_projected
from tests.support.private_cluster import PrivateCluster
from tests.support.private_redis_cluster import PrivateRedisCluster, private_redis_cluster
from tests.support.services import RunningServices, free_port
from tests.support.stack import create_topics, isolated_settings
from tests.support.traffic import CommandTraffic, paced

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(900)]

SLOTS = 3000  # of the 5461 the first primary holds: 5 to 6 of the 32 buckets' tags among them
PIPELINE = 1  # keys per MIGRATE: the smallest, so the move takes seconds and slots sit half-moved
STEADY = 64  # campaigns created once and never changed: each read of them knows its answer
READ_RATE = 40.0  # reads per second through the query API
PAGE = 20


@dataclass
class Reads:
    """Read clients of the query API; anything but the expected answer is an error they saw."""

    client: httpx.AsyncClient
    owner: dict[str, str]  # the steady campaigns' owner's Authorization header
    admin: dict[str, str]
    steady: dict[str, int]  # id -> version
    traffic: CommandTraffic
    seed: int = 11
    seen: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.random = random.Random(self.seed)

    async def _get(self, path: str, headers: dict[str, str]) -> httpx.Response | None:
        try:
            response = await self.client.get(path, headers=headers)
        except httpx.HTTPError as error:
            self.errors.append(f"GET {path}: {error!r}")
            return None
        self.seen[f"{response.status_code}"] += 1
        if response.status_code >= 500:
            self.errors.append(f"GET {path} -> {response.status_code} {response.text[:300]}")
            return None
        return response

    async def one(self) -> None:
        roll = self.random.random()
        if roll < 0.45:
            await self.steady_campaign()
        elif roll < 0.65:
            await self.steady_list()
        elif roll < 0.75:
            for path, headers in (("/stats", self.admin), ("/users/me", self.owner)):
                response = await self._get(path, headers)
                if response is not None and response.status_code != 200:
                    self.errors.append(f"GET {path} -> {response.status_code} {response.text[:300]}")
        else:
            await self.busy_campaign()

    async def steady_campaign(self) -> None:
        campaign_id = self.random.choice(list(self.steady))
        response = await self._get(f"/campaigns/{campaign_id}", self.owner)
        if response is None:
            return
        if response.status_code != 200 or response.headers.get("etag") != f'"{self.steady[campaign_id]}"':
            self.errors.append(
                f"GET /campaigns/{campaign_id} -> {response.status_code} etag "
                f"{response.headers.get('etag')} {response.text[:200]}"
            )

    async def steady_list(self) -> None:
        """Every page of the owner's list: exactly the steady campaigns, each once."""
        found: list[str] = []
        cursor: str | None = None
        for _ in range(len(self.steady) // PAGE + 2):
            query = f"/campaigns?limit={PAGE}" + (f"&cursor={cursor}" if cursor else "")
            response = await self._get(query, self.owner)
            if response is None:
                return
            if response.status_code != 200:
                self.errors.append(f"GET {query} -> {response.status_code} {response.text[:200]}")
                return
            body = response.json()
            found.extend(item["id"] for item in body["items"])
            cursor = body["next_cursor"]
            if cursor is None:
                break
        if sorted(found) != sorted(self.steady):
            missing = set(self.steady) - set(found)
            self.errors.append(
                f"the list had {len(found)} items ({len(set(found))} distinct) for {len(self.steady)} "
                f"campaigns; missing {sorted(missing)[:3]}"
            )

    async def busy_campaign(self) -> None:
        """A campaign the command traffic is changing: 200, or 404 (not projected yet, deleted)."""
        live = list(self.traffic.campaigns.values())
        if not live:
            return
        campaign = self.random.choice(live)
        response = await self._get(f"/campaigns/{campaign.id}", campaign.owner.auth)
        if response is not None and response.status_code not in (200, 404):
            self.errors.append(
                f"GET /campaigns/{campaign.id} -> {response.status_code} {response.text[:200]}"
            )

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await paced(self.one, 1, READ_RATE, 8)


def live_bucket_slots(buckets: int) -> set[int]:
    return {key_slot(segment.strip(":{}").encode()) for segment in bucket_segments(buckets)}


async def test_redis_cluster_resharded_under_traffic_clients_see_no_error(
    private_cluster: PrivateCluster, tmp_path: Path
) -> None:
    cluster = private_cluster
    begun = time.monotonic()
    for node in cluster.node_names():  # after the Kafka faults, or a rerun after a failure
        if cluster.pid(node) is None:
            await asyncio.to_thread(cluster.start, node)
    with private_redis_cluster(tmp_path / "redis") as redis_cluster:
        settings = cluster.settings(
            redis_cluster_nodes=",".join(redis_cluster.addresses),
            command_api_port=free_port(),
            query_api_port=free_port(),
            api_workers=1,
        )
        await create_topics(settings)
        services = RunningServices(settings, tmp_path)
        redis = connect_redis(settings)
        run = ClusterRun(cluster, settings, services, redis)
        try:
            services.start(["command-api", "query-api", "relay", "projectors"])
            services.wait_ready(timeout=120)
            async with (
                loopback.client(base_url=services.command_url, timeout=30) as commands,
                loopback.client(base_url=services.query_url, timeout=30) as queries,
            ):
                steady = CommandTraffic(commands, seed=3)
                (owner,) = await steady.sign_up(1)
                for _ in range(STEADY):
                    await steady.create()
                run.traffic = traffic = CommandTraffic(commands)
                await traffic.sign_up(4)
                await traffic.run(seconds=4, rate=RATE)
                await wait_projected(redis, settings, within=120)
                token = issue_access_token(settings, "an-admin", ["user", "admin"])
                admin = {"Authorization": f"Bearer {token}"}
                reads = Reads(queries, owner.auth, admin, dict(steady.acknowledged), traffic)
                await _move_and_back(run, redis_cluster, reads, settings.read_model_buckets, begun)
                assert steady.server_error_count(allow_503=False) == 0, steady.statuses
                await _assert_steady_unchanged(reads)
                await _assert_final_versions_readable(queries, traffic)
        finally:
            services.stop_all()
            await redis.aclose()
    print(f"reshard test: {time.monotonic() - begun:.0f} s")


async def _move_and_back(
    run: ClusterRun, redis_cluster: PrivateRedisCluster, reads: Reads, buckets: int, begun: float
) -> None:
    before = redis_cluster.slots()
    source = min(before, key=lambda port: min(before[port]))  # the primary of slot 0
    target = next(port for port in sorted(before) if port != source)
    moving = set(sorted(before[source])[:SLOTS])
    tagged = moving & live_bucket_slots(buckets)
    assert tagged, f"no bucket's slot among the {SLOTS} moved"
    took: dict[str, float] = {}
    stop_reading = asyncio.Event()
    reading = asyncio.create_task(reads.run(stop_reading))

    async def reshard(name: str, origin: int, destination: int) -> None:
        started = time.monotonic()
        done = await asyncio.to_thread(redis_cluster.reshard, origin, destination, SLOTS, PIPELINE)
        took[name] = time.monotonic() - started
        assert done.returncode == 0, f"reshard {name}: {done.stdout[-2000:]}{done.stderr[-2000:]}"

    async def move_and_back() -> None:
        await asyncio.sleep(3)
        await reshard("there", source, target)
        moved = redis_cluster.slots()
        assert moving <= moved[target], f"{len(moving - moved[target])} slots did not move"
        await asyncio.sleep(2)
        await reshard("back", target, source)
        await asyncio.sleep(2)

    try:
        await run.under_traffic(10, move_and_back)
    finally:
        stop_reading.set()
        await reading
    after = redis_cluster.slots()
    assert after[source] == before[source], "the slots did not all come back"
    checked = redis_cluster.check()
    assert checked.returncode == 0, checked.stdout[-2000:]
    print(
        f"{SLOTS} slots ({len(tagged)} bucket tags) moved in {took['there']:.1f} s and back in "
        f"{took['back']:.1f} s; reads {dict(reads.seen)}; commands {dict(run.traffic.statuses)}"  # type: ignore[union-attr]
    )
    assert reads.errors == [], f"{len(reads.errors)} read errors: {reads.errors[:5]}"
    assert sum(reads.seen.values()) > 100, reads.seen
    traffic = run.traffic
    assert traffic is not None
    assert traffic.server_error_count(allow_503=False) == 0, traffic.statuses
    assert traffic.transport_errors == 0
    await run.account(
        f"Redis Cluster reshard: {SLOTS} slots ({len(tagged)} buckets) there and back "
        f"({took['there']:.0f} s + {took['back']:.0f} s; {sum(reads.seen.values())} reads, 0 errors)",
        begun,
    )


async def _assert_steady_unchanged(reads: Reads) -> None:
    """After the moves, each steady campaign once more, and the list."""
    reads.errors.clear()
    for campaign_id in reads.steady:
        response = await reads._get(f"/campaigns/{campaign_id}", reads.owner)
        assert response is not None and response.status_code == 200, reads.errors
    await reads.steady_list()
    assert reads.errors == [], reads.errors


# ---------------------------------------------------------------------- one slot, held half-moved


def _cli(port: int, *args: str) -> str:
    return subprocess.run(
        ["redis-cli", "-p", str(port), *args], capture_output=True, text=True, check=True, timeout=10
    ).stdout.strip()


async def test_a_slot_held_half_moved_is_read_and_written_through_ask_tryagain_and_moved(
    tmp_path: Path,
) -> None:
    """One bucket's slot stopped mid-move (what `--cluster reshard` does to each slot, held
    still): half its keys on the importing node. Single-key reads through redis-py, through the
    packed pipelines and through the query API's multiplexer follow ASK; a script over a key on
    each side gets TRYAGAIN and waits until the move ends, then follows MOVED."""
    with private_redis_cluster(tmp_path / "redis") as redis_cluster:
        settings = isolated_settings(redis_cluster_nodes=",".join(redis_cluster.addresses))
        base = generation_base(settings.redis_prefix, "campaigns.1")
        keys = CampaignKeys(base, settings.read_model_buckets)
        ids = [i for i in (uuid.uuid4().hex for _ in range(2000)) if keys.bucket_of(i) == 0][:20]
        names = [keys.campaign(i) for i in ids]
        slot = key_slot(names[0].encode())
        redis = connect_redis(settings)
        multiplexer = ClusterMultiplexer(redis, settings.redis_url)  # type: ignore[arg-type]
        try:
            for n, name in enumerate(names):
                await redis.hset(name, mapping={"doc": f"doc {n}", "v": "1"})
            owners = redis_cluster.slots()
            source = next(port for port, slots in owners.items() if slot in slots)
            target = next(port for port in sorted(owners) if port != source)
            # Several idle connections to the importing node, as a busy process has.
            elsewhere = [keys.campaign(i) for i in (uuid.uuid4().hex for _ in range(3000))]
            on_target = [k for k in elsewhere if key_slot(k.encode()) in owners[target]][:40]
            await asyncio.gather(*(redis.exists(k) for k in on_target))

            _cli(target, "cluster", "setslot", str(slot), "importing", redis_cluster.node_id(source))
            _cli(source, "cluster", "setslot", str(slot), "migrating", redis_cluster.node_id(target))
            moved, stayed = names[: len(names) // 2], names[len(names) // 2 :]
            _cli(source, "migrate", "127.0.0.1", str(target), "", "0", "5000", "keys", *moved)

            expected = [f"doc {n}".encode() for n in range(len(names))]
            # redis-py, many reads at once (ASK with several idle connections on the target)
            read = await asyncio.gather(*(redis.hget(name, "doc") for name in names))
            assert read == expected
            # the packed pipeline
            assert await pipelined(redis, [("HGET", name, "doc") for name in names]) == expected
            # the query API's multiplexer
            read = await asyncio.gather(*(multiplexer.execute("HGET", name, "doc") for name in names))
            assert read == expected

            # A script over a key on each side: TRYAGAIN until the move ends, then MOVED.
            both = LuaScript(
                "both", b"return redis.call('HGET', KEYS[1], 'doc') .. redis.call('HGET', KEYS[2], 'doc')"
            )
            await _cli_all(redis_cluster, "script", "load", both.source.decode())
            waiting = asyncio.create_task(both.run_pipelined(redis, [(2, [moved[0], stayed[0]])]))
            await asyncio.sleep(0.3)
            assert not waiting.done(), waiting.result()
            _cli(source, "migrate", "127.0.0.1", str(target), "", "0", "5000", "keys", *stayed)
            for port in (target, source, *(p for p in owners if p not in (source, target))):
                _cli(port, "cluster", "setslot", str(slot), "node", redis_cluster.node_id(target))
            assert await waiting == [expected[0] + expected[len(names) // 2]]

            # MOVED from the old node: every path follows it and learns the new owner.
            assert await pipelined(redis, [("HGET", name, "doc") for name in names]) == expected
            assert redis.get_node_from_key(names[0]).port == target  # type: ignore[attr-defined]
            read = await asyncio.gather(*(multiplexer.execute("HGET", name, "doc") for name in names))
            assert read == expected
            assert await asyncio.gather(*(redis.hget(name, "doc") for name in names)) == expected
        finally:
            await multiplexer.close()
            await redis.aclose()


async def _cli_all(redis_cluster: PrivateRedisCluster, *args: str) -> None:
    for port in redis_cluster.ports:
        await asyncio.to_thread(_cli, port, *args)


async def _assert_final_versions_readable(queries: httpx.AsyncClient, traffic: CommandTraffic) -> None:
    """Every campaign the traffic left (not deleted), through the query API, at the version its
    last accepted command returned."""
    wrong = []
    for campaign in list(traffic.campaigns.values()):
        response = await queries.get(f"/campaigns/{campaign.id}", headers=campaign.owner.auth)
        expected = f'"{traffic.acknowledged[campaign.id]}"'
        if response.status_code != 200 or response.headers.get("etag") != expected:
            wrong.append((campaign.id, response.status_code, response.headers.get("etag"), expected))
    assert not wrong, wrong[:5]
    assert traffic.campaigns, "the traffic left no campaign to read"
