"""The monitor's fan-out: a slow client loses messages (and is told), never holds up the others."""

from __future__ import annotations

import orjson

from query_api.adapters.monitor_feed import MonitorFeed, Subscriber, event_message
from tests.support.clock import Clock


def feed() -> MonitorFeed:
    async def no_status() -> dict:
        return {}

    return MonitorFeed(redis=None, prefix="p", status=no_status)  # type: ignore[arg-type]


async def test_a_full_client_drops_and_counts_while_the_others_get_everything() -> None:
    monitor = feed()
    slow, fast = Subscriber(capacity=3), Subscriber(capacity=100)
    monitor.subscribers.update({slow, fast})
    for n in range(10):
        monitor.broadcast(f'{{"n": {n}}}')
    assert fast.queue.qsize() == 10
    assert slow.queue.qsize() == 3
    assert slow.dropped_total == 7
    # The next thing the slow client gets says how many it missed, then the oldest it kept.
    assert orjson.loads(await slow.next()) == {"type": "dropped", "count": 7}
    assert orjson.loads(await slow.next()) == {"n": 0}
    assert [orjson.loads(await fast.next())["n"] for _ in range(10)] == list(range(10))


async def test_a_client_full_for_longer_than_the_patience_is_flagged_too_slow() -> None:
    clock = Clock()
    slow = Subscriber(capacity=1, patience=10.0, clock=clock)
    slow.offer("a")
    slow.offer("b")  # full from now on
    clock.now += 5
    slow.offer("c")
    assert not slow.too_slow.is_set()
    clock.now += 6
    slow.offer("d")
    assert slow.too_slow.is_set()


async def test_a_client_that_catches_up_is_forgiven() -> None:
    clock = Clock()
    client = Subscriber(capacity=2, patience=10.0, clock=clock)
    for message in "abc":
        client.offer(message)
    await client.next()  # the dropped notice
    await client.next()
    await client.next()  # empty again: caught up
    clock.now += 60
    client.offer("d")
    client.offer("e")
    client.offer("f")  # full again, but only just
    assert not client.too_slow.is_set()


def test_an_event_message_carries_the_delay_from_occurrence_to_projection() -> None:
    notice = {
        "event_type": "CampaignCreated",
        "aggregate_id": "c1",
        "aggregate_version": 1,
        "occurred_at": "2027-03-01T12:00:00.100Z",
        "projected_at": "2027-03-01T12:00:00.350Z",
    }
    message = orjson.loads(event_message(orjson.dumps(notice)))
    assert message == {"type": "event", **notice, "delay_ms": 250}


async def test_the_feed_stops_listening_when_the_last_client_leaves() -> None:
    monitor = feed()
    client = Subscriber()
    monitor.subscribers.add(client)
    monitor.leave(client)
    assert not monitor.subscribers
    assert monitor._tasks == []
