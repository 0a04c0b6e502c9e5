"""A Redis Cluster primary SIGKILLed under steady API traffic (issue 16.5): its replica takes over,
nothing is dead-lettered, reads recover within seconds and nothing accepted is lost for good.

The whole system runs as processes (command API, query API, relay, projectors, as the end-to-end
tests start them) with the read models on a private 3+3 Redis Cluster of this test's own (never
the shared 7000-7005 nodes); Kafka and MongoDB are the shared stack's, under this test's own
topics and database. Write clients post commands (create, patch, activate, pause, complete,
delete) through the command API and read clients read campaigns by id and list pages through the
query API, before, during and after the kill.

Before the kill the victim's replication link is cut, and the kill waits until the primary holds
writes its replica lacks: the failover then really loses acknowledged writes, as with a replica
behind across a network (on loopback a SIGKILLed primary's last writes still reach the replica
from its socket). So:
(a) no event is dead-lettered: the DLQ topics stay empty and no projection counts a dead letter;
(b) the query API answers every read again within READS_RECOVER_WITHIN seconds of the kill (by
    id, on the killed primary's slots, and a list page, which reads every bucket), each within
    SLOW_READ of being sent, and goes on answering; until then only 503 (problem+json) is
    allowed, never a 500 or a wrong answer (the command API likewise: its per-user command rate
    and sessions are in the same Redis);
(c) what the failover lost (the replication stream's bytes the promoted replica never had, and
    the campaigns it holds at a lower version than before the kill, measured) is repaired by what
    the system has for it (gap repair, anti-entropy, counted in the projections' status) with no
    operator, every campaign the command API accepted reads at its last version (the newest in
    the events log) through the query API, and `campaigns replay verify all` (the code it runs)
    finds the read models equal to a rebuild of the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from redis.crc import key_slot

from projectors.replay.application.ports import NoProgress
from projectors.replay.application.verify import VerifyReport
from projectors.replay.bootstrap import replay
from projectors.replay.domain.plan import SourceName
from readmodels.keyspace import CampaignKeys, generation_base
from readmodels.status import read_status
from service_runtime.redis_client import connect_redis
from service_runtime.settings import Settings
from tests.chaos.test_faults import dead_letters
from tests.support import loopback
from tests.support.ledger import log_envelopes, max_versions, projected_versions
from tests.support.private_redis_cluster import PrivateRedisCluster, private_redis_cluster
from tests.support.services import RunningServices, free_port
from tests.support.traffic import CommandTraffic, paced
from tests.support.waiting import eventually

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(300)]

# How long after the SIGKILL every read must be answered again. The private cluster's node
# timeout is 2 s (tests/support/private_redis_cluster.py): the other primaries flag the victim
# failed after it, the replica waits 0.5-1 s more before its election and the query API's
# client then finds the new owner on its next read. Measured on the shared 2-core host with the
# whole system and six Redis nodes on it: 4.0-4.8 s in four runs (README, "Tests"). 10 s leaves
# room for a loaded machine and still fails a client that keeps a dead node for longer.
READS_RECOVER_WITHIN = 10.0
STEADY = 24  # campaigns created first and never changed: every read of them knows its answer
PAGE = 20
WRITE_RATE = 8.0  # commands per second
# Reads per second of each kind, each kind with clients of its own (a read held through the
# failover never keeps another kind from being sent).
READ_RATES = {"by id (victim)": 5.0, "by id (other)": 5.0, "list": 4.0, "busy": 2.0}
BEFORE_KILL = 4.0  # seconds of traffic before the replication link is cut
AFTER_RECOVERY = 6.0  # seconds of traffic past the recovery bound, to see reads keep succeeding
# A read answered later than this after it was sent counts as not answered: the query API holds a
# read while its Redis client retries through a failover, and a user waiting that long has no answer.
SLOW_READ = 1.0
# Replication stream the primary holds beyond its replica when it is killed: a few events' writes
# (a campaign event's script replicates about 1-1.5 kB), not only a heartbeat.
UNREPLICATED_BYTES = 3000
REPAIRED_WITHIN = 60.0
KINDS = ("by id (victim)", "by id (other)", "list")


@dataclass
class Read:
    kind: str  # "by id (victim)", "by id (other)", "list"
    started: float
    ended: float
    ok: bool
    answer: str


@dataclass
class ReadClients:
    """Read clients of the query API: each read and whether it got the right answer."""

    client: httpx.AsyncClient
    owner: dict[str, str]
    steady: dict[str, int]  # id -> its one version
    on_victim: set[str]
    traffic: CommandTraffic
    reads: list[Read] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)
    went_back: list[str] = field(default_factory=list)  # a busy campaign read at a lower version
    highest: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.random = random.Random(16)
        self._next = 0

    async def _get(self, path: str, headers: dict[str, str]) -> httpx.Response | str:
        try:
            return await self.client.get(path, headers=headers)
        except httpx.HTTPError as error:
            return f"transport error {error!r}"

    def _note(self, kind: str, started: float, ok: bool, answer: str) -> None:
        self.reads.append(Read(kind, started, time.monotonic(), ok, answer))

    def _unavailable(self, path: str, response: httpx.Response | str) -> str:
        """Why a read failed; a failure that is not "unavailable, try again" is also wrong."""
        if isinstance(response, str):
            self.wrong.append(f"GET {path}: {response}")
            return response
        problem = response.headers.get("content-type", "").startswith("application/problem+json")
        if response.status_code != 503 or not problem:
            self.wrong.append(f"GET {path} -> {response.status_code} {response.text[:200]}")
        return f"{response.status_code}"

    async def one(self, kind: str) -> None:
        if kind == "list":
            await self.list_page()
        elif kind == "busy":
            await self.busy()
        else:
            among = sorted(c for c in self.steady if (c in self.on_victim) == (kind == "by id (victim)"))
            self._next += 1
            await self.by_id(among[self._next % len(among)])  # every one in turn

    async def by_id(self, campaign_id: str) -> None:
        kind = "by id (victim)" if campaign_id in self.on_victim else "by id (other)"
        started = time.monotonic()
        path = f"/campaigns/{campaign_id}"
        response = await self._get(path, self.owner)
        if isinstance(response, httpx.Response) and response.status_code == 200:
            version = f'"{self.steady[campaign_id]}"'
            right = response.headers.get("etag") == version and response.json()["id"] == campaign_id
            if not right:
                self.wrong.append(f"GET {path} -> etag {response.headers.get('etag')}")
            self._note(kind, started, right, "200")
            return
        self._note(kind, started, False, self._unavailable(path, response))

    async def list_page(self) -> None:
        started = time.monotonic()
        path = f"/campaigns?limit={PAGE}"
        response = await self._get(path, self.owner)
        if isinstance(response, httpx.Response) and response.status_code == 200:
            ids = [item["id"] for item in response.json()["items"]]
            right = len(ids) == min(PAGE, len(self.steady)) == len(set(ids)) and set(ids) <= set(self.steady)
            if not right:
                self.wrong.append(f"GET {path}: {len(ids)} items, not {PAGE} of the owner's campaigns")
            self._note("list", started, right, "200")
            return
        self._note("list", started, False, self._unavailable(path, response))

    async def busy(self) -> None:
        """A campaign the write clients are changing: a version below one read before is a
        write the read models lost (found again later, below)."""
        live = list(self.traffic.campaigns.values())
        if not live:
            return
        campaign = self.random.choice(live)
        response = await self._get(f"/campaigns/{campaign.id}", campaign.owner.auth)
        if not isinstance(response, httpx.Response) or response.status_code != 200:
            return  # 404: not projected yet or deleted meanwhile; 503: counted by the steady reads
        version = int(response.headers["etag"].strip('"'))
        if version < self.highest.get(campaign.id, 0):
            self.went_back.append(f"{campaign.id}: {self.highest[campaign.id]} -> {version}")
        self.highest[campaign.id] = max(version, self.highest.get(campaign.id, 0))

    async def run(self, stop: asyncio.Event) -> None:
        async def reading(kind: str, rate: float) -> None:
            while not stop.is_set():
                await paced(lambda: self.one(kind), 1, rate, 3)

        await asyncio.gather(*(reading(kind, rate) for kind, rate in READ_RATES.items()))

    def unanswered(self, r: Read) -> bool:
        return not r.ok or r.ended - r.started > SLOW_READ

    def recovery(self, kill: float) -> dict[str, float]:
        """Per kind of read: seconds from the kill to the end of the last read started after it
        that failed or took longer than SLOW_READ (0: none)."""
        return {
            kind: max(
                (
                    r.ended - kill
                    for r in self.reads
                    if r.kind == kind and r.started >= kill and self.unanswered(r)
                ),
                default=0.0,
            )
            for kind in KINDS
        }

    def timeline(self, kill: float) -> str:
        """Reads after the kill that were not answered: kind, sent and answered (s after the kill)."""
        return ", ".join(
            f"{r.kind} {r.answer} {r.started - kill:.1f}-{r.ended - kill:.1f}"
            for r in self.reads
            if r.started >= kill and self.unanswered(r)
        )

    def succeeded_after(self, moment: float) -> Counter[str]:
        return Counter(r.kind for r in self.reads if r.started > moment and not self.unanswered(r))


async def test_a_primary_killed_under_traffic_fails_over_losing_nothing_for_good(
    settings: Settings, tmp_path: Path
) -> None:
    begun = time.monotonic()
    with private_redis_cluster(tmp_path / "redis") as cluster:
        on_cluster = settings.model_copy(
            update={
                "redis_cluster_nodes": ",".join(cluster.addresses),
                "command_api_port": free_port(),
                "query_api_port": free_port(),
                "api_workers": 1,
            }
        )
        services = RunningServices(on_cluster, tmp_path)
        redis = connect_redis(on_cluster)
        try:
            services.start(["command-api", "query-api", "relay", "projectors"])
            services.wait_ready(timeout=120)
            async with (
                loopback.client(base_url=services.command_url, timeout=30) as commands,
                loopback.client(base_url=services.query_url, timeout=10) as queries,
            ):
                steady = CommandTraffic(commands, seed=3)
                (owner,) = await steady.sign_up(1)
                for _ in range(STEADY):
                    await steady.create()
                assert len(steady.campaigns) == STEADY, steady.statuses
                traffic = CommandTraffic(commands)
                await traffic.sign_up(4)
                await eventually(
                    lambda: _all_readable(queries, owner.auth, list(steady.campaigns)),
                    60,
                    0.3,
                    "the steady campaigns to be readable",
                )
                victim = _busiest_primary(cluster, on_cluster, list(steady.campaigns))
                replica = cluster.replica_of(victim)
                keys = _campaign_keys(on_cluster)
                owned = cluster.slots()[victim]
                on_victim = {c for c in steady.campaigns if key_slot(keys.campaign(c).encode()) in owned}
                assert 0 < len(on_victim) < STEADY, (
                    f"{len(on_victim)} steady campaigns on the primary to kill"
                )
                reads = ReadClients(queries, owner.auth, dict(steady.acknowledged), on_victim, traffic)
                ready_at = time.monotonic()

                killed: dict[str, float | int] = {}
                lost: dict[tuple[str, str], tuple[int, int]] = {}  # campaign -> (before, after)

                async def fault() -> None:
                    await asyncio.sleep(BEFORE_KILL)
                    await asyncio.to_thread(cluster.cut_replication, replica)
                    await eventually(
                        lambda: asyncio.to_thread(_unreplicated, cluster, victim, replica),
                        20,
                        0.1,
                        "the primary to accept writes its replica lacks",
                    )
                    before = (await projected_versions(redis, on_cluster))["campaigns"]
                    killed["offset"] = int(
                        (await asyncio.to_thread(cluster.replication, victim))["master_repl_offset"]
                    )
                    cluster.kill(victim)
                    killed["at"] = time.monotonic()
                    # The read models as the promoted replica has them, at the first look: a
                    # campaign at a lower version than before the kill lost a write there.
                    after: dict[tuple[str, str], int] = {}
                    await eventually(
                        lambda: _versions_into(after, redis, on_cluster), 30, 0.1, "a read after the failover"
                    )
                    killed["first look"] = time.monotonic() - killed["at"]
                    lost.update({c: (v, after.get(c, 0)) for c, v in before.items() if after.get(c, 0) < v})

                stop_reading = asyncio.Event()
                reading = asyncio.create_task(reads.run(stop_reading))
                writing = asyncio.create_task(
                    traffic.run(seconds=BEFORE_KILL + READS_RECOVER_WITHIN + AFTER_RECOVERY, rate=WRITE_RATE)
                )
                try:
                    await fault()
                    await writing
                    # Reads go on until AFTER_RECOVERY past the bound, however long the kill waited.
                    await asyncio.sleep(
                        max(0.0, killed["at"] + READS_RECOVER_WITHIN + AFTER_RECOVERY - time.monotonic())
                    )
                finally:
                    writing.cancel()
                    stop_reading.set()
                    await asyncio.gather(reading, writing, return_exceptions=True)
                kill_at = float(killed["at"])
                traffic_ended = time.monotonic()
                traffic_seconds = time.monotonic() - ready_at

                # The replica took over, and what it never had is what the failover lost.
                assert victim not in cluster.primaries()
                assert cluster.replication(replica)["role"] == "master"
                lost_bytes = int(killed["offset"]) - (
                    int(cluster.replication(replica)["second_repl_offset"]) - 1
                )
                assert lost_bytes > 0, "the promoted replica had every write: nothing was lost to find"

                # (b) reads recovered within the bound and kept succeeding after it.
                recovered = reads.recovery(kill_at)
                worst = max(recovered.values())
                after = reads.succeeded_after(kill_at + worst)
                answers = Counter(f"{r.kind}: {r.answer}" for r in reads.reads if r.started >= kill_at)
                print(
                    f"killed primary {victim} (replica {replica} promoted; {lost_bytes} bytes of its "
                    f"replication stream lost); reads recovered after (s): "
                    + ", ".join(f"{k} {v:.1f}" for k, v in recovered.items())
                    + f"; the cluster answered again after {killed['first look']:.1f} s; not answered "
                    f"(sent-answered, s after the kill): {reads.timeline(kill_at)}"
                    + f"; answers after the kill {dict(answers)}; readers saw {len(reads.went_back)} "
                    f"versions go back; commands {dict(traffic.statuses)} in {traffic_seconds:.0f} s"
                )
                assert reads.wrong == [], f"{len(reads.wrong)} wrong answers: {reads.wrong[:5]}"
                assert worst <= READS_RECOVER_WITHIN, (
                    f"reads failed until {worst:.1f} s after the kill: {recovered}"
                )
                for kind in KINDS:
                    assert after[kind] >= 3, f"too few {kind} reads succeeded after recovering: {after}"
                assert traffic.server_errors == [], traffic.server_errors[:5]
                assert traffic.transport_errors == 0
                assert traffic.accepted > 0

                # (c) nothing accepted lost for good: repaired by the system, and verify agrees.
                logged = max_versions(await log_envelopes(on_cluster))
                assert traffic.campaigns, "the write clients left no campaign to read"
                await eventually(
                    lambda: _every_accepted_version_readable(queries, traffic, logged),
                    REPAIRED_WITHIN,
                    0.5,
                    "every accepted campaign to read at its last version",
                )
                repaired_at = time.monotonic() - kill_at
                after_traffic = time.monotonic() - traffic_ended
                verified = await _verify(on_cluster)
                repairs = await _repairs(redis, on_cluster)
                print(
                    f"{len(lost)} campaigns a version behind on the promoted replica "
                    f"{sorted(lost.values())[:5]}; every accepted campaign at its last version "
                    f"{repaired_at:.1f} s after the kill ({after_traffic:.1f} s after the traffic "
                    f"ended); repairs by the projectors {repairs}; "
                    f"replay verify: {_drift(verified)}; {time.monotonic() - begun:.0f} s in all"
                )
                assert not verified.drift, _drift(verified)

                # (a) nothing dead-lettered.
                assert await dead_letters(on_cluster) == 0
                status = await read_status(redis, on_cluster.redis_prefix, ["campaigns", "users", "stats"])
                assert all(int(s.get("dead_lettered_total", 0)) == 0 for s in status.values()), status
        finally:
            services.stop_all()
            await redis.aclose()


def _campaign_keys(settings: Settings) -> CampaignKeys:
    # The generation is outside the hash tag: any generation's key has the slot of the live one.
    return CampaignKeys(generation_base(settings.redis_prefix, "campaigns.1"), settings.read_model_buckets)


def _busiest_primary(cluster: PrivateRedisCluster, settings: Settings, campaign_ids: list[str]) -> int:
    """The primary holding the most of these campaigns' documents."""
    keys = _campaign_keys(settings)
    held: Counter[int] = Counter()
    for port, slots in cluster.slots().items():
        held[port] = sum(key_slot(keys.campaign(c).encode()) in slots for c in campaign_ids)
    return held.most_common(1)[0][0]


def _unreplicated(cluster: PrivateRedisCluster, primary: int, replica: int) -> bool:
    ahead = int(cluster.replication(primary)["master_repl_offset"])
    return ahead - int(cluster.replication(replica)["master_repl_offset"]) >= UNREPLICATED_BYTES


async def _all_readable(queries: httpx.AsyncClient, auth: dict[str, str], ids: list[str]) -> bool:
    answers = await asyncio.gather(*(queries.get(f"/campaigns/{i}", headers=auth) for i in ids))
    return all(a.status_code == 200 for a in answers)


async def _every_accepted_version_readable(
    queries: httpx.AsyncClient, traffic: CommandTraffic, logged: dict[tuple[str, str], int]
) -> bool:
    """Every campaign the write clients left (not deleted) reads at its last version: the newest
    in the events log, which is at least the version its last accepted command returned (a
    command answered 503 may have been written all the same)."""
    for campaign in list(traffic.campaigns.values()):
        version = logged[("campaign", campaign.id)]
        assert version >= traffic.acknowledged[campaign.id], (campaign.id, version)
        response = await queries.get(f"/campaigns/{campaign.id}", headers=campaign.owner.auth)
        if response.status_code != 200 or response.headers.get("etag") != f'"{version}"':
            return False
    return True


async def _versions_into(found: dict[tuple[str, str], int], redis: object, settings: Settings) -> bool:
    try:
        found.update((await projected_versions(redis, settings))["campaigns"])  # type: ignore[arg-type]
    except Exception:  # the cluster is still failing over
        return False
    return True


async def _verify(settings: Settings) -> VerifyReport:
    """What `campaigns replay verify all` runs: every projection rebuilt from the events log into
    a scratch generation and compared with the live one."""
    async with replay(settings) as tools:
        return await tools.verify("all", SourceName.MONGO, NoProgress())


def _drift(report: VerifyReport) -> str:
    if not report.drift:
        return f"no drift ({report.events} events)"
    differing = []
    for p in report.projections:
        if p.diff is not None:
            differing.append(f"{p.projection}: " + "; ".join(p.diff.lines(5)))
    return f"DRIFT ({report.events} events) " + " | ".join(differing)


async def _repairs(redis: object, settings: Settings) -> dict[str, int]:
    status = await read_status(redis, settings.redis_prefix, ["campaigns", "users", "stats"])  # type: ignore[arg-type]
    totals: Counter[str] = Counter()
    for values in status.values():
        for name in ("gaps_repaired_total", "anti_entropy_repairs_total"):
            with contextlib.suppress(ValueError):
                totals[name] += int(values.get(name, 0))
    return dict(totals)
