"""The composition root: the real adapters wired to the handlers, for the API, the relay, the
scheduler and the CLI.

What only one side uses is imported inside the function that builds it, so a process loads only
its own side: the relay, say, never loads the password hasher or the token signer (argon2,
PyJWT and cryptography are megabytes of resident memory per process).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import redis.asyncio as aioredis
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from command_api.adapters.command_rate import RedisCommandRate
from command_api.adapters.due_transitions import MongoDueTransitions
from command_api.adapters.group_commit import GroupCommit
from command_api.adapters.kafka_publisher import KafkaEventPublisher, ProducerFactory, kafka_producer_factory
from command_api.adapters.login_throttle import RedisLoginThrottle, ThrottleLimits
from command_api.adapters.mongo_schema import (
    CAMPAIGNS,
    LEGACY_DUE_TRANSITIONS,
    RELAY_STATE,
    SCHEDULER_STATE,
    Document,
    IndexGate,
    mongo_client,
)
from command_api.adapters.mongo_unit_of_work import (
    MongoUnitOfWork,
    ReadAhead,
    Write,
    WriteTransactions,
    refused_write,
)
from command_api.adapters.outbox_relay import OutboxRelay
from command_api.adapters.readiness import Readiness
from command_api.adapters.relay_lease import SCHEDULER_LEASE_ID, RelayLease
from command_api.adapters.scheduler_status import RedisSchedulerStatus, SchedulerReport
from command_api.adapters.sessions import RedisRefreshGrace
from command_api.application.live_cap import LiveCampaignCap
from command_api.application.scheduling import Scheduler, SchedulerConfig
from command_api.application.user_handlers import Credentials
from command_api.domain.user import PasswordPolicy
from events import Topics
from events.envelope import utc_now
from service_runtime.redis_client import connect_redis
from service_runtime.sessions import SessionCutoffs
from service_runtime.settings import Settings

if TYPE_CHECKING:  # PyJWT and cryptography: loaded by the API process only
    from service_runtime.tokens import VerifiedAccessTokens


@dataclass
class CommandSide:
    """Everything a command handler may be given, built once per process."""

    settings: Settings
    mongo: AsyncMongoClient[Document]
    db: AsyncDatabase[Document]
    redis: aioredis.Redis
    indexes: IndexGate
    credentials: Credentials
    cutoffs: SessionCutoffs
    access_tokens: VerifiedAccessTokens
    command_rate: RedisCommandRate
    readiness: Readiness
    live_cap: LiveCampaignCap

    # The process's command transactions: at most `mongo_transactions_in_flight` at once, the
    # commands that queue meanwhile committed together (group_commit.py).
    transactions: GroupCommit[Write]

    def unit_of_work(self) -> MongoUnitOfWork:
        return MongoUnitOfWork(self.mongo, self.db, self.indexes, self.transactions)

    async def close(self) -> None:
        await self.transactions.drain()
        await self.mongo.close()
        await self.redis.aclose()


def throttle_limits(settings: Settings) -> ThrottleLimits:
    return ThrottleLimits(
        address_max_failures=settings.login_address_max_failures,
        address_window_seconds=settings.login_address_window_seconds,
        account_max_guesses=settings.login_account_max_guesses,
        account_window_seconds=settings.login_account_window_seconds,
        trusted_max_failures=settings.login_trusted_max_failures,
        device_seconds=settings.device_cookie_seconds,
        register_max=settings.register_max_per_address,
        register_window_seconds=settings.register_window_seconds,
    )


def password_policy(settings: Settings) -> PasswordPolicy:
    return PasswordPolicy(
        min_length=settings.password_min_length,
        max_length=settings.password_max_length,
        min_distinct=settings.password_min_distinct,
    )


def session_cutoffs(settings: Settings, redis: aioredis.Redis) -> SessionCutoffs:
    return SessionCutoffs(
        redis,
        prefix=settings.redis_prefix,
        check_seconds=settings.session_check_seconds,
        token_ttl_seconds=settings.access_token_ttl_seconds,
    )


def open_command_side(settings: Settings) -> CommandSide:
    """Clients connect lazily, so this needs no server to be up yet."""
    from command_api.adapters.access_tokens import JwtAccessTokenIssuer
    from command_api.adapters.passwords import Argon2PasswordHasher
    from service_runtime.tokens import VerifiedAccessTokens

    mongo = mongo_client(settings)
    db = mongo[settings.mongo_db]
    redis = connect_redis(settings)
    cutoffs = session_cutoffs(settings, redis)
    return CommandSide(
        settings=settings,
        mongo=mongo,
        db=db,
        redis=redis,
        indexes=IndexGate(db),
        transactions=GroupCommit(
            WriteTransactions(mongo, db).run,
            in_flight=settings.mongo_transactions_in_flight,
            max_commands=settings.mongo_group_commit_commands,
            refused=refused_write,
        ),
        credentials=Credentials(
            hasher=Argon2PasswordHasher(),
            throttle=RedisLoginThrottle(
                redis, prefix=settings.redis_prefix, limits=throttle_limits(settings)
            ),
            access_tokens=JwtAccessTokenIssuer(settings),
            refresh_lifetime=timedelta(seconds=settings.refresh_token_ttl_seconds),
            sessions=cutoffs,
            grace=RedisRefreshGrace(
                redis, prefix=settings.redis_prefix, grace_seconds=settings.refresh_grace_seconds
            ),
            family_lifetime=timedelta(seconds=settings.refresh_family_max_seconds),
            refresh_grace=timedelta(seconds=settings.refresh_grace_seconds),
            password_policy=password_policy(settings),
        ),
        cutoffs=cutoffs,
        access_tokens=VerifiedAccessTokens(settings, size=settings.access_token_cache_size),
        command_rate=RedisCommandRate(
            redis,
            prefix=settings.redis_prefix,
            per_second=settings.command_rate_per_second,
            burst=settings.command_burst,
        ),
        readiness=Readiness(db, settings.kafka_bootstrap),
        live_cap=LiveCampaignCap(
            settings.max_live_campaigns,
            recount_seconds=settings.live_campaigns_recount_seconds,
            tracked_owners=settings.live_campaigns_tracked_owners,
            rate_per_second=settings.command_rate_per_second,
            burst=settings.command_burst,
        ),
    )


def build_outbox_relay(
    settings: Settings,
    *,
    mongo: AsyncMongoClient[Document],
    redis: aioredis.Redis | None,
    producer_factory: ProducerFactory | None = None,
    holder: str | None = None,
) -> OutboxRelay:
    db = mongo[settings.mongo_db]
    return OutboxRelay(
        db=db,
        gate=IndexGate(db),
        lease=RelayLease(db[RELAY_STATE], seconds=settings.relay_lease_seconds, holder=holder),
        publisher=KafkaEventPublisher(
            producer_factory or kafka_producer_factory(settings),
            Topics(settings.topic_prefix),
            transactional=settings.relay_transactions,
        ),
        redis=redis,
        redis_prefix=settings.redis_prefix,
        batch_size=settings.relay_batch_size,
        linger_seconds=settings.relay_linger_ms / 1000,
        rescan_margin_seconds=settings.relay_rescan_margin_seconds,
    )


class SystemClock:
    """The scheduler's clock: UTC wall time (what due times are), and asyncio's sleep."""

    def now(self) -> datetime:
        return utc_now()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


@dataclass
class SchedulerSide:
    instance: str
    mongo: AsyncMongoClient[Document]
    redis: aioredis.Redis
    timers: MongoDueTransitions
    lease: RelayLease
    report: SchedulerReport
    status: RedisSchedulerStatus
    scheduler: Scheduler

    async def close(self) -> None:
        await self.mongo.close()
        await self.redis.aclose()


def open_scheduler_side(settings: Settings, *, instance: str) -> SchedulerSide:
    """The scheduler process: its timer store, the command side's unit of work, its reports."""
    mongo = mongo_client(settings)
    db = mongo[settings.mongo_db]
    redis = connect_redis(settings)
    gate = IndexGate(db)
    # The campaigns read with their due timers, for the firings to take (a few reads' worth).
    read_ahead = ReadAhead(limit=8 * settings.scheduler_batch_size)
    timers = MongoDueTransitions(db[CAMPAIGNS], read_ahead, legacy=db[LEGACY_DUE_TRANSITIONS])
    # One scheduler fires at a time; the others wait to take over (`scheduler_lease_seconds`).
    lease = RelayLease(
        db[SCHEDULER_STATE],
        seconds=settings.scheduler_lease_seconds,
        holder=instance,
        lease_id=SCHEDULER_LEASE_ID,
        role="scheduler",
    )
    report = SchedulerReport(instance)
    scheduler = Scheduler(
        store=timers,
        unit_of_work=lambda: MongoUnitOfWork(mongo, db, gate, read_ahead=read_ahead),
        clock=SystemClock(),
        observer=report,
        lease=lease,
        config=SchedulerConfig(
            lookahead_seconds=settings.scheduler_lookahead_seconds,
            poll_seconds=settings.scheduler_poll_seconds,
            batch_size=settings.scheduler_batch_size,
            concurrency=settings.scheduler_concurrency,
            fire_batch=settings.scheduler_fire_batch,
            firing_timeout_seconds=settings.scheduler_firing_timeout_seconds,
            sweep_seconds=settings.scheduler_sweep_seconds,
        ),
    )
    return SchedulerSide(
        instance=instance,
        mongo=mongo,
        redis=redis,
        timers=timers,
        lease=lease,
        report=report,
        status=RedisSchedulerStatus(redis, settings.redis_prefix),
        scheduler=scheduler,
    )
