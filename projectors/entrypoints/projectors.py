"""The projectors process: one FastStream batch subscriber (own consumer group) per projection.

`campaigns serve projectors` runs `run(settings)`.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord
from faststream.kafka import KafkaBroker
from faststream.message import StreamMessage
from faststream.middlewares import AckPolicy
from pymongo import AsyncMongoClient
from pymongo.read_concern import ReadConcern
from redis.asyncio import Redis

from events import Topics
from events.log import EventsLog, events_collection
from events.state_versions import StateVersions
from projectors.adapters.dead_letters import KafkaDeadLetters, declare_dead_letter_topics
from projectors.adapters.metrics import (
    ANTI_ENTROPY_CHECKED,
    ANTI_ENTROPY_PACE,
    ANTI_ENTROPY_REPAIRS,
    ANTI_ENTROPY_SWEEPS,
    GAPS_REPAIRED,
    GAPS_UNFILLABLE,
    LAYOUT_REBUILDS,
    REDIS_LOSS,
    RETRIES,
    observe_batch,
    observe_lag,
)
from projectors.adapters.read_model_versions import RedisReadModelVersions
from projectors.adapters.redis_projection import all_projections
from projectors.adapters.transient import is_transient
from projectors.application.anti_entropy import AntiEntropy, needs_rebuild
from projectors.application.consume import BatchReport, EventRecord, ProjectionConsumer
from projectors.application.gap_repair import GapRepairer
from projectors.domain.backoff import Backoff
from projectors.domain.pacing import pause_after_step, walk_pace
from projectors.entrypoints.console_operations import console_operations
from projectors.monitoring.sampler import sampling
from projectors.replay.application.ports import BusyError, NoProgress
from projectors.replay.bootstrap import replay
from projectors.replay.domain.plan import SourceName
from readmodels.generations import (
    LAYOUT_VERSIONS,
    ReadModelsLost,
    claim_live_generation,
    claim_while_whole,
    mark_layout,
    mark_rebuilding,
    mark_whole,
    outdated_layouts,
    read_models_whole,
)
from readmodels.groups import projection_group, projection_topics
from readmodels.keyspace import generation_base, parked_set_keys
from readmodels.status import record_batch, write_heartbeat
from service_runtime.background import BackgroundLoops
from service_runtime.kafka_batches import NoCast, first_record_headers, wake_at_once
from service_runtime.kafka_commits import IntervalCommits, commit_on_interval
from service_runtime.kafka_topics import require_topics
from service_runtime.logs import configure_logging
from service_runtime.redis_client import connect_redis
from service_runtime.settings import Settings

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 2.0
# Kafka's (and aiokafka's) default fetch.max.wait.ms; with fetch.min.bytes 1 a fetch is answered
# as soon as any record is there, so it only bounds an empty fetch.
KAFKA_FETCH_WAIT_MS = 500
# Consecutive checks that must find the sentinel gone before the projections are rebuilt.
LOSS_CONFIRMATIONS = 2


async def _records(message: StreamMessage[Any], original: Callable[..., Awaitable[Any]]) -> list[EventRecord]:
    """The batch as records: no JSON decoding here, each value is decoded (or dead-lettered) alone."""
    raw: tuple[ConsumerRecord[bytes, bytes], ...] = message.raw_message
    return [EventRecord(r.topic, r.partition, r.offset, r.key, r.value, tuple(r.headers or ())) for r in raw]


class Projectors:
    """The broker with every projection subscribed, the Redis client and the heartbeat."""

    def __init__(self, settings: Settings, redis: Redis | None = None) -> None:
        self.settings = settings
        self.redis = redis if redis is not None else connect_redis(settings)
        self._owns_redis = redis is None
        self.broker = KafkaBroker(
            settings.kafka_bootstrap_servers,
            client_id=f"{settings.topic_prefix}projectors",
            acks="all",
            enable_idempotence=True,
            metadata_max_age_ms=settings.kafka_metadata_max_age_ms,
            allow_auto_create_topics=False,
            logger=logging.getLogger("projectors.faststream"),
            log_level=logging.DEBUG,
            description="Projectors: build the Redis read models from the domain events.",
        )
        self.topics = Topics(settings.topic_prefix)
        declare_dead_letter_topics(self.broker, [self.topics.users, self.topics.campaigns])
        dead_letters = KafkaDeadLetters(self.broker)
        self.consumers: dict[str, ProjectionConsumer] = {}
        self.subscribers: dict[str, Any] = {}
        self.commits: dict[str, IntervalCommits] = {}
        for projection in all_projections(settings.redis_prefix, settings.read_model_buckets):
            group = projection_group(settings, projection.name)
            consumer = ProjectionConsumer(projection, self.redis, dead_letters, group)
            self.consumers[projection.name] = consumer
            self.subscribers[projection.name] = self._subscribe(consumer, group)
        # Each projection's consumer lag, as the heartbeat last measured it.
        self._lags: dict[str, int] = {}
        # Records the live consumers handled since the start (anti-entropy's pace yields to them).
        self._live_records = 0
        self.mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(settings.mongo_url)
        events = events_collection(self.mongo, settings.mongo_db).with_options(
            read_concern=ReadConcern("majority")
        )
        self.repairers = [
            GapRepairer(
                consumer.projection,
                self.redis,
                EventsLog(events),
                dead_letters,
                consumer.consumer_group,
                self.topics,
                settings.gap_repair_delay_seconds,
                settings.repairs_kept,
            )
            for consumer in self.consumers.values()
        ]
        self.anti_entropy = AntiEntropy(
            [consumer.projection for consumer in self.consumers.values()],
            self.redis,
            RedisReadModelVersions(self.redis, settings.read_model_buckets, settings.repairs_kept),
            StateVersions(self.mongo.get_database(settings.mongo_db, read_concern=ReadConcern("majority"))),
            EventsLog(events),
            settings.anti_entropy_batch_size,
            settings.anti_entropy_grace_seconds,
        )
        # The heartbeat, gap repair, loss watch, anti-entropy, status and layout loops; a stop
        # ends them within `projectors_stop_seconds` even if a client swallows the cancellation.
        self._loops = BackgroundLoops(settings.projectors_stop_seconds)

    def _subscribe(self, consumer: ProjectionConsumer, group: str) -> Any:
        projection = consumer.projection
        settings = self.settings
        # A projection that announces what it applied wakes `min_version` reads: every record is
        # fetched at once. The others (stats) are read by dashboards: fetched in batches.
        batched = not projection.announces
        commits = IntervalCommits(settings.projector_commit_seconds, group)
        self.commits[projection.name] = commits
        subscriber = self.broker.subscriber(
            *projection_topics(projection.aggregate_types, self.topics),
            group_id=group,
            batch=True,
            batch_timeout_ms=settings.consumer_poll_ms,
            fetch_min_bytes=settings.batch_fetch_min_bytes if batched else 1,
            fetch_max_wait_ms=settings.batch_fetch_wait_ms if batched else KAFKA_FETCH_WAIT_MS,
            max_records=self.settings.consumer_batch_size,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            session_timeout_ms=self.settings.kafka_session_timeout_ms,
            heartbeat_interval_ms=self.settings.kafka_heartbeat_interval_ms,
            # Acknowledge after the handler returned (Redis written, dead letters acknowledged):
            # the batch's offsets are then committed within `projector_commit_seconds`, before a
            # rebalance and at stop; on an exception seek back so the batch is consumed again.
            ack_policy=AckPolicy.NACK_ON_ERROR,
            listener=commits,
            parser=commits.parser(first_record_headers),
            decoder=_records,
            title=f"{group}:consume",
            description=f"The {projection.name} projection, consumer group {group}.",
        )

        backoff = Backoff(
            self.settings.projector_retry_initial_seconds, self.settings.projector_retry_max_seconds
        )

        async def project(records: NoCast[list[EventRecord]]) -> None:
            started = time.perf_counter()
            self._live_records += len(records)
            report = await self._holding(consumer, records, backoff)
            observe_batch(projection.name, report, time.perf_counter() - started)

        project.__name__ = project.__qualname__ = f"project_{projection.name}"
        subscriber(project)
        return commit_on_interval(wake_at_once(subscriber), commits)

    async def _holding(
        self, consumer: ProjectionConsumer, records: list[EventRecord], backoff: Backoff
    ) -> BatchReport:
        """The batch applied, retried in place while the servers refuse it (holding its partition,
        nothing committed, nothing dead-lettered). An error that is not the servers', or one that
        outlasts `projector_retry_hold_seconds`, is raised after a pause: the batch is not
        committed and comes again, and the pauses keep growing, so a nack never spins."""
        group = consumer.consumer_group
        holding_until = time.monotonic() + self.settings.projector_retry_hold_seconds
        while True:
            try:
                report = await consumer.handle(records)
            except Exception as error:
                pause = backoff.next_pause()
                transient = is_transient(error)
                if not transient or time.monotonic() + pause > holding_until or not self._loops.running:
                    log.exception("batch not applied; it will be consumed again", extra={"group": group})
                    await self._loops.pause(pause)
                    raise
                RETRIES.labels(consumer.projection.name).inc()
                log.warning(
                    "batch not applied (%s: %s); retried in %.1f s, holding the partition",
                    type(error).__name__,
                    error,
                    pause,
                    extra={"group": group},
                )
                await self._loops.pause(pause)
                continue
            backoff.reset()
            return report

    async def start(self) -> None:
        prefix = self.settings.redis_prefix
        whole, rebuilding = await read_models_whole(self.redis, prefix)
        live = {name: await claim_live_generation(self.redis, prefix, name) for name in self.consumers}
        if not whole and not rebuilding:
            # A fresh start: the generations are empty, and this code writes its own layout.
            for name, generation in live.items():
                await mark_layout(self.redis, prefix, name, generation, only_if_absent=True)
        if rebuilding:
            # A rebuild after a loss was cut short (a stop, a crash): the sentinel stays away, so
            # readers keep answering 503 and `_watch_for_loss` rebuilds again.
            log.error("a rebuild after a Redis loss was interrupted; it starts again")
        else:
            # A fresh start (or a deployment older than the sentinel). Aggregates lost while no
            # projector ran are found by anti-entropy (`_anti_entropy`) and repaired one by one.
            await mark_whole(self.redis, prefix, only_if_absent=True)
        await self.broker.start()
        loops = self._loops
        loops.start(self._beat(), "projectors-heartbeat")
        loops.start(self._repair_gaps(), "projectors-gap-repair")
        loops.start(self._watch_for_loss(), "projectors-redis-loss")
        if self.settings.anti_entropy_enabled:
            loops.start(self._anti_entropy(), "projectors-anti-entropy")
        loops.start(self._flush_statuses(), "projectors-status")
        loops.start(self._upgrade_layouts(), "projectors-layouts")
        log.info("projectors started", extra={"projections": list(self.consumers)})

    async def stop(self) -> None:
        await self._loops.stop()
        # Waits for a batch in progress to finish (and commit) before leaving the groups, for
        # `projectors_stop_seconds` at most: on a loaded broker LeaveGroup requests time out and
        # are retried for minutes. Past the bound the process stops anyway; an uncommitted batch
        # comes again to the next consumer, and the version guard makes that harmless.
        try:
            await asyncio.wait_for(self.broker.stop(), self.settings.projectors_stop_seconds)
        except TimeoutError:
            log.warning(
                "the consumers did not leave their groups within %.0f s; stopped without them",
                self.settings.projectors_stop_seconds,
            )
        for consumer in self.consumers.values():
            try:
                await consumer.flush_status()
            except Exception:
                log.warning(
                    "last status not written", exc_info=True, extra={"group": consumer.consumer_group}
                )
        if self._owns_redis:
            await self.redis.aclose()
        await self.mongo.close()
        log.info("projectors stopped")

    async def __aenter__(self) -> Projectors:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def _flush_statuses(self) -> None:
        """Every `projector_status_seconds`: each projection's counters and last batch, if any."""
        # On stop, `stop` flushes once the consumers have stopped.
        while await self._loops.pause(self.settings.projector_status_seconds):
            for consumer in self.consumers.values():
                try:
                    await consumer.flush_status()
                except Exception:
                    log.warning("status not written; kept for the next flush", exc_info=True)

    async def _repair_gaps(self) -> None:
        """Every `gap_repair_scan_seconds`: fill from the log the gaps older than the repair delay."""
        while self._loops.running:
            for repairer in self.repairers:
                name = repairer.projection.name
                try:
                    repairs = await repairer.scan(time.monotonic())
                except ReadModelsLost:
                    continue  # rebuilt by `_watch_for_loss`
                except Exception:
                    log.warning("gap repair failed; tried again", exc_info=True, extra={"projection": name})
                    continue
                for repair in repairs:
                    if repair.filled:
                        GAPS_REPAIRED.labels(name).inc()
                    if repair.filled and needs_rebuild(name, repair.filled[0] - 1):
                        # Filled from version 1: its state was gone, maybe deleted by hand with
                        # its index entries or its counted contribution left behind.
                        self.anti_entropy.rebuilds.add(name)
                    if repair.unfillable:
                        GAPS_UNFILLABLE.labels(name).inc()
            if self.anti_entropy.rebuilds and not self.settings.anti_entropy_enabled:
                await self._recount(sorted(self.anti_entropy.rebuilds))
                self.anti_entropy.rebuilds.clear()
            await self._loops.pause(self.settings.gap_repair_scan_seconds)

    async def _watch_for_loss(self) -> None:
        """Every `redis_loss_check_seconds`: is the sentinel there? If not, Redis lost the read
        models: rebuild every projection from the events log through the generation protocol
        (batches wait meanwhile, readers get 503), then write the sentinel again."""
        prefix = self.settings.redis_prefix
        lost = False
        missing = 0
        while await self._loops.pause(self.settings.redis_loss_check_seconds):
            try:
                whole, rebuilding = await read_models_whole(self.redis, prefix)
                if whole:
                    lost = False
                    missing = 0
                    continue
                # A loss is acted on once seen twice in a row (a rebuild drops the live
                # generation; one odd reply must not cause it), or at once after a rebuild that
                # was cut short. A check that fails (a timeout, Redis down) is no evidence at all.
                missing += 1
                if missing < LOSS_CONFIRMATIONS and not rebuilding:
                    continue
                if not lost:
                    lost = True
                    REDIS_LOSS.inc()
                    log.error("Redis lost the read models: rebuilding every projection from the events log")
                await mark_rebuilding(self.redis, prefix)
                started = time.monotonic()
                async with replay(self.settings) as tools:
                    report = await tools.rebuild("all", SourceName.MONGO, NoProgress(), 0)
                await mark_whole(self.redis, prefix)
                lost = False
                missing = 0
                log.warning(
                    "read models rebuilt after the Redis loss: %d events in %.1f s",
                    report.events,
                    time.monotonic() - started,
                    extra={"generations": [p.new_generation for p in report.projections]},
                )
            except Exception:
                log.warning("Redis loss check or rebuild failed; tried again", exc_info=True)

    async def _upgrade_layouts(self) -> None:
        """Rebuild each projection whose live generation holds an older key layout than this code
        reads (a deployment upgraded across a layout change, `generations.LAYOUT_VERSIONS`): into
        a new generation from the events log, through the replay tool, swapped in once caught up.
        Until the swap the projector writes, and readers read, the old generation. Looked at
        again every `layout_check_seconds` until none is outdated: another instance may hold the
        rebuild's lock, or a rebuild may fail and must be tried again."""
        prefix = self.settings.redis_prefix
        while self._loops.running:
            try:
                outdated = await outdated_layouts(self.redis, prefix, self.consumers)
                if not outdated:
                    return
                whole, _ = await read_models_whole(self.redis, prefix)
                for name, (generation, version) in outdated.items():
                    if not whole:
                        break  # lost: `_watch_for_loss` rebuilds every projection
                    log.warning(
                        "%s: the live generation %s has key layout %d, this code reads layout %d; "
                        "rebuilding it from the events log",
                        name,
                        generation,
                        version,
                        LAYOUT_VERSIONS[name],
                        extra={"projection": name},
                    )
                    async with replay(self.settings) as tools:
                        report = await tools.rebuild(
                            name, SourceName.MONGO, NoProgress(), self.settings.layout_rebuild_grace_seconds
                        )
                    LAYOUT_REBUILDS.labels(name).inc()
                    await record_batch(
                        self.redis,
                        prefix,
                        name,
                        counters={"layout_rebuilds_total": 1},
                        fields={"last_layout_rebuild": f"layout {version} -> {LAYOUT_VERSIONS[name]}"},
                        repair={"kind": "layout", "rebuilt": True, "events": report.events},
                        repairs_kept=self.settings.repairs_kept,
                    )
            except BusyError:
                log.info("a rebuild holds a projection whose layout is outdated; looked at again later")
            except Exception:
                log.warning("layout rebuild failed; tried again", exc_info=True)
            await self._loops.pause(self.settings.layout_check_seconds)

    async def _anti_entropy(self) -> None:
        """The anti-entropy pass, step after step, at most `anti_entropy_keys_per_second` keys
        read a second (less what the live consumers' events take, `walk_pace`), resting
        `anti_entropy_interval_seconds` after each sweep."""
        try:
            await self._anti_entropy_steps()
        finally:
            await self.anti_entropy.close()

    async def _anti_entropy_steps(self) -> None:
        settings = self.settings
        checker = self.anti_entropy
        # The live consumers' rate is measured from one step to the next (the step and its rest).
        last_started, last_records = time.monotonic(), self._live_records
        while self._loops.running:
            started = time.monotonic()
            live = (self._live_records - last_records) / max(started - last_started, 1e-3)
            last_started, last_records = started, self._live_records
            pace = walk_pace(
                settings.anti_entropy_keys_per_second, settings.anti_entropy_busy_keys_per_second, live
            )
            ANTI_ENTROPY_PACE.set(pace)
            try:
                backlog = frozenset(
                    name for name, lag in self._lags.items() if lag > settings.consumer_batch_size
                )
                step = await checker.step(started, backlog)
            except ReadModelsLost:
                await self._loops.pause(settings.anti_entropy_interval_seconds or 1.0)
                continue  # rebuilt by `_watch_for_loss`
            except Exception:
                log.warning("anti-entropy step failed; tried again", exc_info=True)
                await self._loops.pause(settings.anti_entropy_interval_seconds or 1.0)
                continue
            for repair in step.repairs:
                ANTI_ENTROPY_REPAIRS.labels(repair.projection).inc()
            ANTI_ENTROPY_CHECKED.inc(step.keys_checked)
            if step.sweep_done:
                ANTI_ENTROPY_SWEEPS.inc()
            if checker.rebuilds and step.sweep_done:  # at most one rebuild of each a sweep
                await self._recount(sorted(checker.rebuilds))
                checker.rebuilds.clear()
            await self._loops.pause(
                pause_after_step(
                    step.keys_checked,
                    time.monotonic() - started,
                    pace,
                    sweep_done=step.sweep_done,
                    interval=settings.anti_entropy_interval_seconds,
                )
            )

    async def _recount(self, projections: list[str]) -> None:
        """Rebuild projections whose shared keys (counters, indexes) a repair aggregate by
        aggregate cannot make exact, after an aggregate's state was found gone altogether."""
        for name in projections:
            log.error("%s lost an aggregate's whole state; rebuilding it from the events log", name)
            try:
                async with replay(self.settings) as tools:
                    report = await tools.rebuild(name, SourceName.MONGO, NoProgress(), 0)
            except Exception:
                log.warning(
                    "anti-entropy rebuild failed; tried again", exc_info=True, extra={"projection": name}
                )
                continue
            ANTI_ENTROPY_REPAIRS.labels(name).inc()
            await record_batch(
                self.redis,
                self.settings.redis_prefix,
                name,
                counters={"anti_entropy_repairs_total": 1},
                fields={"last_anti_entropy_repair": f"rebuilt ({report.events} events)"},
                repair={"kind": "anti-entropy", "rebuilt": True, "events": report.events},
                repairs_kept=self.settings.repairs_kept,
            )

    async def _beat(self) -> None:
        # Every loop here ends on `self._loops.running` as well as on cancellation (see
        # service_runtime.background for why).
        while self._loops.running:
            for name, consumer in self.consumers.items():
                try:
                    await self._beat_one(name, consumer)
                except Exception:
                    log.warning("heartbeat not written", exc_info=True, extra={"projection": name})
            await self._loops.pause(HEARTBEAT_SECONDS)

    async def _beat_one(self, name: str, consumer: ProjectionConsumer) -> None:
        subscriber = self.subscribers[name]
        kafka: AIOKafkaConsumer | None = subscriber.consumer
        if kafka is None or not subscriber.running:
            return  # no heartbeat: the query API's readiness sees the projector as stale
        prefix = self.settings.redis_prefix
        try:
            generation = await claim_while_whole(self.redis, prefix, name)
        except ReadModelsLost:
            await write_heartbeat(self.redis, prefix, name, {"projection": name, "state": "rebuilding"})
            return
        pipe = self.redis.pipeline(transaction=False)
        for key in parked_set_keys(generation_base(prefix, generation), self.settings.read_model_buckets):
            pipe.scard(key)
        parked_now = sum(await pipe.execute())
        lag = await _lag(kafka)
        observe_lag(name, lag)
        self._lags[name] = lag
        await write_heartbeat(
            self.redis,
            prefix,
            name,
            {
                "projection": name,
                "state": "running",
                "generation": generation,
                "consumer_group": consumer.consumer_group,
                "instance": consumer.instance,
                "lag": lag,
                "partitions": len(kafka.assignment()),
                "aggregates_with_parked_events": parked_now,
            },
        )


async def _lag(consumer: AIOKafkaConsumer) -> int:
    """Records between this consumer's position and the end of its partitions (as last fetched)."""
    lag = 0
    for partition in consumer.assignment():
        end = consumer.highwater(partition)
        if end is None:
            continue
        try:
            async with asyncio.timeout(1):
                position = await consumer.position(partition)
        except Exception:
            log.debug("position unknown", exc_info=True, extra={"partition": str(partition)})
            continue
        lag += max(0, end - position)
    return lag


async def serve(settings: Settings) -> None:
    """Run every projection until cancelled, then leave the consumer groups cleanly."""
    async with Projectors(settings):
        await asyncio.Event().wait()


async def run(settings: Settings) -> None:
    """What `campaigns serve projectors` runs: until SIGTERM or SIGINT."""
    configure_logging("projectors")
    await require_topics(settings, "projectors")
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    try:
        async with Projectors(settings) as projectors:
            async with (
                sampling(settings, projectors.redis),
                console_operations(settings, projectors.redis),
            ):
                await stopping.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
