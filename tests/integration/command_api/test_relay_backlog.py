"""The relay's backlog on the real servers: the paged scan of a log it has no watermark for,
quarantine of what Kafka can never take, the fall-back scan when the change stream cannot resume
from the watermark, and what a relay with a watermark reads of the log."""

from __future__ import annotations

import asyncio
import logging
import re
import sys
from collections.abc import AsyncIterator
from datetime import timedelta

import orjson
import pytest
import redis.asyncio as aioredis
from pymongo import AsyncMongoClient, monitoring
from pymongo.asynchronous.database import AsyncDatabase

from command_api.adapters.mongo_schema import RELAY_STATE, Document, ensure_indexes
from command_api.adapters.relay_change_feed import ChangeFeed
from command_api.entrypoints.relay_tools import NotAnswered, resend
from events.envelope import utc_now
from events.log import WATERMARK_ID, read_watermark
from readmodels.keyspace import relay_status_key
from service_runtime.redis_client import connect_redis
from service_runtime.settings import Settings
from tests.integration.command_api.outbox import (
    all_published,
    consume,
    interleaved,
    log_documents,
    running_relay,
    versions_by_key,
    wait_until,
)
from tests.support.services import free_port, settings_env
from tests.support.stack import REPO


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[aioredis.Redis]:
    client = connect_redis(settings)
    yield client
    await client.aclose()


async def test_a_backlog_larger_than_a_page_is_published_page_by_page_in_order(
    settings: Settings,
    mongo: AsyncMongoClient[Document],
    db: AsyncDatabase[Document],
    caplog: pytest.LogCaptureFixture,
) -> None:
    paged = settings.model_copy(update={"relay_batch_size": 100})
    aggregates = [f"p{i:02d}" for i in range(12)]
    await db["events"].insert_many(interleaved(aggregates, range(1, 101)))  # 1200 events
    caplog.set_level(logging.INFO, logger="command_api.adapters.outbox_relay")
    async with running_relay(paged, mongo):
        await wait_until(lambda: all_published(db), 120, "the backlog published")

    pages = [
        int(m.group(1))
        for r in caplog.records
        if (m := re.search(r"publishing a page of (\d+)", r.getMessage()))
    ]
    assert len(pages) >= 12 and max(pages) <= 100, pages  # never more than one page in memory
    received = await consume(paged, 1200, settle=0.5)
    assert versions_by_key(received) == {a: list(range(1, 101)) for a in aggregates}


async def test_events_both_the_scan_and_the_stream_find_at_a_first_start_are_handed_out_once(
    db: AsyncDatabase[Document],
) -> None:
    await ensure_indexes(db)
    await db["events"].insert_many(log_documents("before", range(1, 6)))
    feed = ChangeFeed(db, batch_size=4, on_history_lost=lambda reason: None)
    async with feed:
        assert feed.scanning  # no watermark: the log is scanned after the stream opened
        # Recorded after the stream opened and before the scan reads them: both find them.
        await db["events"].insert_many(log_documents("between", range(1, 11)))
        scanned: list[Document] = []
        while feed.scanning:
            scanned += await feed.scan_page()
        await db["events"].insert_many(log_documents("after", range(1, 4)))
        streamed: list[Document] = []
        async with asyncio.timeout(30):
            while len(streamed) < 3:
                streamed += [change["fullDocument"] for change in await feed.changes(0.5)]
        streamed += [change["fullDocument"] for change in await feed.changes(1.0)]

    def keys(documents: list[Document]) -> list[tuple[str, int]]:
        return [(d["aggregate_id"], d["aggregate_version"]) for d in documents]

    before, between = [("before", v) for v in range(1, 6)], [("between", v) for v in range(1, 11)]
    assert sorted(keys(scanned)) == before + between
    assert keys(streamed) == [("after", v) for v in range(1, 4)]


async def test_unpublishable_events_are_quarantined_and_the_others_go_on(
    settings: Settings, mongo: AsyncMongoClient[Document], db: AsyncDatabase[Document], redis: aioredis.Redis
) -> None:
    small = _small_messages(settings)
    documents = _too_large_at_version_2(range(1, 6))
    broken = log_documents("r", range(1, 2))[0]
    broken["event_type"] = "NoSuchEvent"  # cannot be serialised as any known event
    await db["events"].insert_many([*documents, broken])

    async with running_relay(small, mongo, redis=redis) as relay:

        async def published(count: int) -> bool:
            return relay.published_total >= count

        await wait_until(lambda: published(4), 30, "the other events published")
        await db["events"].insert_many(log_documents("q", range(6, 8)))  # and the stream goes on
        await wait_until(lambda: published(6), 30, "the later events published")

        async def reported() -> bool:
            raw = await redis.get(relay_status_key(small.redis_prefix))
            return raw is not None and orjson.loads(raw)["quarantined"] == 2

        await wait_until(reported, 10, "the status to show the quarantined events")
        assert relay.progress.quarantined_total == 2

    too_large = await db["events"].find_one({"aggregate_id": "q", "aggregate_version": 2})
    unknown = await db["events"].find_one({"aggregate_id": "r"})
    assert too_large is not None and "too large" in too_large["quarantine"]["reason"]
    assert "published" not in too_large
    assert unknown is not None and "cannot be serialised" in unknown["quarantine"]["reason"]
    received = await consume(small, 6, settle=0.5)
    assert versions_by_key(received) == {"q": [1, 3, 4, 5, 6, 7]}

    code, out, err = await _campaigns(small, "relay", "quarantined")
    assert code == 0, out + err
    lines = out.splitlines()
    assert len(lines) == 4, out
    assert any(line.startswith(f"{too_large['_id']}  campaign q v2 CampaignUpdated  ") for line in lines), out
    assert any(line.startswith(f"{unknown['_id']}  campaign r v1 NoSuchEvent  ") for line in lines), out
    assert lines[2] == "2 quarantined event(s)", out
    assert lines[3] == "fix each in the events log, then: campaigns relay resend <event-id>", out
    one = small.model_copy(update={"relay_quarantined_listed": 1})  # CAMPAIGNS_RELAY_QUARANTINED_LISTED
    code, out, err = await _campaigns(one, "relay", "quarantined")
    assert code == 0 and out.splitlines()[1] == "2 quarantined event(s); --limit 2 lists them all", out + err
    code, out, err = await _campaigns(one, "relay", "quarantined", "--limit", "2")
    assert code == 0 and len(out.splitlines()) == 4, out + err


async def test_a_quarantined_event_fixed_in_the_log_is_resent_by_the_operator_while_the_relay_runs(
    settings: Settings, mongo: AsyncMongoClient[Document], db: AsyncDatabase[Document], redis: aioredis.Redis
) -> None:
    small = _small_messages(settings)
    documents = _too_large_at_version_2(range(1, 4))
    await db["events"].insert_many(documents)
    event_id = documents[1]["_id"]

    async with running_relay(small, mongo, redis=redis) as relay:

        async def published(count: int) -> bool:
            return relay.published_total >= count

        async def quarantined_reported(count: int) -> bool:
            raw = await redis.get(relay_status_key(small.redis_prefix))
            return raw is not None and orjson.loads(raw)["quarantined"] == count

        await wait_until(lambda: published(2), 30, "versions 1 and 3 published")
        await wait_until(lambda: quarantined_reported(1), 10, "the status to show the quarantined event")
        quarantine = (await db["events"].find_one({"_id": event_id}) or {})["quarantine"]

        # The operator finds it, and why.
        code, out, err = await _campaigns(small, "relay", "quarantined", "--json")
        assert code == 0, out + err
        listed = orjson.loads(out)
        assert listed["total"] == 1 and len(listed["events"]) == 1, listed
        event = listed["events"][0]
        assert (event["event_id"], event["aggregate_id"], event["aggregate_version"]) == (event_id, "q", 2)
        assert event["event_type"] == "CampaignUpdated" and event["kind"] == "too_large", event
        assert event["bytes"] > 5000 and "too large for Kafka" in event["reason"], event

        # Not fixed yet: refused with Kafka's reason, and nothing changes.
        code, out, err = await _campaigns(small, "relay", "resend", event_id)
        assert code == 1, out + err
        assert f"Kafka still refuses event {event_id}: too large for Kafka" in err
        assert (await db["events"].find_one({"_id": event_id}) or {})["quarantine"] == quarantine

        # Fixed by the operator, then resent beside the running relay.
        await db["events"].update_one({"_id": event_id}, {"$set": {"payload.description": "fixed"}})
        code, out, err = await _campaigns(small, "relay", "resend", event_id)
        assert code == 0, out + err
        assert f"event {event_id} (CampaignUpdated, version 2 of campaign q) sent to " in out
        assert "its quarantine (too_large) is lifted" in out
        await wait_until(lambda: quarantined_reported(0), 10, "the status to count no quarantined event")
        code, out, err = await _campaigns(small, "relay", "quarantined")
        assert (code, out) == (0, "0 quarantined event(s)\n"), out + err

        # The relay was not fenced by it and goes on with the stream.
        await db["events"].insert_many(log_documents("q", range(4, 5)))
        await wait_until(lambda: published(3), 30, "version 4 published")
        assert relay.progress.fenced_total == 0

    assert "quarantine" not in (await db["events"].find_one({"_id": event_id}) or {"quarantine": "gone"})
    received = await consume(small, 4, settle=0.5)
    assert versions_by_key(received) == {"q": [1, 3, 2, 4]}
    assert received[2].envelope.payload["description"] == "fixed"
    assert received[2].headers["event_id"] == event_id

    # An id the log does not hold: said so, exit status 1.
    code, out, err = await _campaigns(small, "relay", "resend", "no-such-event")
    assert code == 1 and "no event no-such-event in the events log" in err, out + err


async def test_a_resend_with_a_server_down_says_which_and_changes_nothing(
    settings: Settings, db: AsyncDatabase[Document]
) -> None:
    documents = _too_large_at_version_2(range(1, 3))
    mark = {"reason": "too large for Kafka", "kind": "too_large", "at": utc_now()}
    documents[1]["quarantine"] = mark
    await db["events"].insert_many(documents)
    event_id = documents[1]["_id"]
    nobody = f"127.0.0.1:{free_port()}"  # a port no server listens on

    no_kafka = settings.model_copy(update={"kafka_bootstrap": nobody})
    with pytest.raises(NotAnswered, match=f"Kafka did not take event {event_id}.*nothing changed"):
        await resend(no_kafka, event_id)
    no_mongo = settings.model_copy(update={"mongo_url": f"mongodb://{nobody}/?serverSelectionTimeoutMS=500"})
    with pytest.raises(NotAnswered, match="MongoDB did not answer"):
        await resend(no_mongo, event_id)

    stored = await db["events"].find_one({"_id": event_id})
    assert stored is not None and stored["quarantine"]["reason"] == mark["reason"]
    assert await consume(settings, 1, within=3.0) == []


def _small_messages(settings: Settings) -> Settings:
    return settings.model_copy(update={"relay_max_message_bytes": 2048, "relay_lease_seconds": 2.0})


def _too_large_at_version_2(versions: range) -> list[Document]:
    """Campaign q's events; version 2 too large for `_small_messages`' topic."""
    documents = log_documents("q", versions)
    documents[1]["payload"] = {"description": "x" * 5000}
    return documents


async def _campaigns(settings: Settings, *args: str) -> tuple[int | None, str, str]:
    """`campaigns ARGS` as an operator runs it, without blocking this loop (a relay runs on it)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "launcher",
        *args,
        cwd=REPO,
        env=settings_env(settings),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await process.communicate()
    return process.returncode, out.decode(), err.decode()


async def test_a_resume_token_the_server_cannot_use_falls_back_to_the_scan_and_raises_the_alert(
    settings: Settings, mongo: AsyncMongoClient[Document], db: AsyncDatabase[Document], redis: aioredis.Redis
) -> None:
    # A token from a history the server no longer has (SecantusDB refuses it as unusable;
    # MongoDB says ChangeStreamHistoryLost): events written meanwhile must still all go out.
    # The watermark held events up to an hour ago; those of the last hour go out again, and
    # older ones (outside the margin) do not.
    lost = {"_data": "82" + "00" * 40}
    old = log_documents("old", range(1, 3))
    for document in old:
        document["recorded_at"] -= timedelta(hours=2)
    through = utc_now() - timedelta(hours=1)
    await db[RELAY_STATE].insert_one({"_id": WATERMARK_ID, "token": lost, "recorded_through": through})
    await db["events"].insert_many([*old, *log_documents("h", range(1, 6))])

    async with running_relay(settings, mongo, redis=redis) as relay:
        await wait_until(lambda: all_published(db), 30, "the events written while the history was lost")
        assert relay.progress.history_lost_total == 1

        async def alerted() -> bool:
            raw = await redis.get(relay_status_key(settings.redis_prefix))
            return raw is not None and orjson.loads(raw)["change_stream_history_lost"] is not None

        await wait_until(alerted, 10, "the status to carry the alert")
        status = orjson.loads(await redis.get(relay_status_key(settings.redis_prefix)) or b"{}")
        assert status["change_stream_history_lost"]["total"] == 1
        await db["events"].insert_many(log_documents("h", range(6, 8)))  # the new stream works
        await wait_until(lambda: all_published(db), 30, "events after the fall-back")

    saved = await read_watermark(db)
    assert saved is not None and saved.token is not None and saved.token != lost
    received = await consume(settings, 7, settle=0.5)
    assert versions_by_key(received) == {"h": list(range(1, 8))}


class EventsReads(monitoring.CommandListener):
    """The reads of one database's events log a client sends (change streams aside)."""

    def __init__(self, database: str) -> None:
        self.database = database
        self.commands: list[Document] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        command = event.command
        if event.database_name != self.database or command.get(event.command_name) != "events":
            return
        if event.command_name not in ("find", "aggregate", "count"):
            return
        if any("$changeStream" in stage for stage in command.get("pipeline", [])):
            return
        self.commands.append(
            {k: v for k, v in command.items() if k not in ("lsid", "$clusterTime", "$db", "txnNumber")}
        )

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def docs_examined(explained: object) -> int:
    """The most documents any stage of an explain output examined."""
    if isinstance(explained, dict):
        own = explained.get("totalDocsExamined", 0)
        return max([own if isinstance(own, int) else 0, *(docs_examined(v) for v in explained.values())])
    if isinstance(explained, list):
        return max((docs_examined(v) for v in explained), default=0)
    return 0


async def test_a_relay_with_a_watermark_reads_no_more_of_the_log_than_its_backlog_whatever_its_size(
    settings: Settings, mongo: AsyncMongoClient[Document], db: AsyncDatabase[Document], redis: aioredis.Redis
) -> None:
    # Its status counts (every 2 s), and with a watermark to resume from, no scan at all. On
    # SecantusDB an unhinted count of unindexed events (the quarantined: a partial index its
    # planner never picks by itself) reads the whole log; and a hinted read walks the whole
    # index in order, reading every event it holds under the server's storage lock, whatever
    # its filter, while its explain reports the bounded plan: so a range read must go unhinted.
    await ensure_indexes(db)
    await db["events"].insert_many(log_documents("old", range(1, 2001)))
    async with running_relay(settings, mongo):
        await wait_until(lambda: all_published(db), 60, "the old events published")
    await db["events"].insert_many(log_documents("new", range(1, 6)))
    reads = EventsReads(settings.mongo_db)
    watched: AsyncMongoClient[Document] = AsyncMongoClient(
        settings.mongo_url, tz_aware=True, event_listeners=[reads]
    )
    try:
        async with running_relay(settings, watched, redis=redis) as relay:
            await wait_until(lambda: all_published(db), 30, "the new events published")

            async def reported() -> bool:
                raw = await redis.get(relay_status_key(settings.redis_prefix))
                return raw is not None and orjson.loads(raw)["backlog"] == 0

            await wait_until(reported, 15, "the relay's status")
            assert relay.published_total == 5
    finally:
        await watched.close()

    kinds = {next(iter(command)) for command in reads.commands}
    assert kinds == {"aggregate"}, kinds  # the status counts, and no scan
    for command in reads.commands:
        explained = await db.command({"explain": command, "verbosity": "executionStats"})
        assert docs_examined(explained) <= 10, (command, docs_examined(explained))
        matched = command["pipeline"][0].get("$match", {})
        if "recorded_at" in matched:  # the backlog: a range of the index on `recorded_at`
            assert "hint" not in command, command
