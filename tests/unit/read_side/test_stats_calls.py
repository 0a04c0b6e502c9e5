"""The stats projection's script calls (projectors/adapters/stats_projection.py `plan_calls`),
without Redis: one call per bucket per batch (chunked), every key declared in KEYS and in the
bucket's slot, every event sent exactly once, each aggregate's events in the batch's order, an
event without a rule refused before any call."""

from __future__ import annotations

from typing import Any

import pytest
from redis.crc import key_slot

from events import EventEnvelope
from projectors.adapters.stats_projection import EVENTS_PER_CALL, StatsCall, plan_calls
from readmodels.campaigns import packed_id
from readmodels.keyspace import StatsKeys, bucket_of, generation_base, parked_key, parked_set_key
from tests.integration.read_side.workload import interleave, mixed_workload, new_user

BUCKETS = 32
BASE = generation_base("rm", "stats.3")


def _events(campaigns: int = 120) -> list[EventEnvelope]:
    users = [new_user() for _ in range(10)]
    for user in users[:4]:
        user.then("UserLoggedIn")
    return interleave([*mixed_workload(campaigns, ["u1", "u2"]), *users])


def _blocks(call: StatsCall) -> list[tuple[str, str, str, list[Any]]]:
    """Each event block of a call: parked key, member, version, change."""
    blocks, i = [], 1
    while i < len(call.args):
        parked, member, version, n = call.args[i : i + 4]
        assert isinstance(parked, int) and isinstance(n, int)
        blocks.append(
            (str(call.keys[parked - 1]), str(member), str(version), list(call.args[i + 4 : i + 4 + n]))
        )
        i += 4 + n
    return blocks


def test_one_call_per_bucket_every_key_declared_once_and_in_the_bucket_slot() -> None:
    events = _events()
    calls, refused = plan_calls(events, BASE, BUCKETS, "2027-03-01T00:00:00.000Z")
    assert refused == {}
    touched = {bucket_of(e.aggregate_id, BUCKETS) for e in events}
    assert sorted(call.bucket for call in calls) == sorted(touched)  # one each: none past 256
    keys = StatsKeys(BASE, BUCKETS)
    for call in calls:
        assert len({key_slot(str(k).encode()) for k in call.keys}) == 1  # one slot a call
        assert len(set(call.keys)) == len(call.keys)  # each key once
        bucket = call.bucket
        assert call.keys[:6] == [
            keys.counts(bucket),
            keys.budget(bucket),
            keys.events_per_minute(bucket),
            parked_set_key(BASE, BUCKETS, bucket),
            keys.campaign_states(bucket),
            keys.user_states(bucket),
        ]
        assert call.command == (len(call.keys), [*call.keys, *call.args])
        for (parked, member, version, change), position in zip(_blocks(call), call.positions, strict=True):
            envelope = events[position]
            kind, aggregate_id = member.split(":", 1)
            assert (kind, aggregate_id, version) == (
                envelope.aggregate_type,
                envelope.aggregate_id,
                str(envelope.aggregate_version),
            )
            assert bucket_of(aggregate_id, BUCKETS) == bucket
            assert parked == parked_key(BASE, kind, aggregate_id, BUCKETS)
            # The change leads with the aggregate's field in its bucket's hash of states.
            assert change[:2] == [packed_id(aggregate_id), kind]


@pytest.mark.parametrize("per_call", [1, 3, EVENTS_PER_CALL])
@pytest.mark.parametrize("buckets", [1, BUCKETS])
def test_every_event_sent_once_each_aggregate_in_the_batch_order(per_call: int, buckets: int) -> None:
    events = _events()
    calls, _ = plan_calls(events, BASE, buckets, "t", per_call)
    assert all(1 <= len(call.positions) <= per_call for call in calls)
    sent = [position for call in calls for position in call.positions]
    assert sorted(sent) == list(range(len(events)))  # every event, once
    # In the order the calls are sent (each primary runs them in the order of its write), each
    # aggregate's events come in the batch's order.
    by_aggregate: dict[str, list[int]] = {}
    for position in sent:
        by_aggregate.setdefault(events[position].aggregate_id, []).append(position)
    assert all(positions == sorted(positions) for positions in by_aggregate.values())
    assert all(call.args[0] == "t" for call in calls)


def test_a_single_bucket_sends_the_whole_batch_in_calls_of_events_per_call() -> None:
    events = _events(200)
    assert len(events) > EVENTS_PER_CALL
    calls, _ = plan_calls(events, BASE, 1, "t")
    assert [len(call.positions) for call in calls] == [
        min(EVENTS_PER_CALL, len(events) - start) for start in range(0, len(events), EVENTS_PER_CALL)
    ]


def test_an_aggregate_s_parked_hash_is_declared_once_a_call_however_many_of_its_events() -> None:
    events = _events(3)
    calls, _ = plan_calls(events, BASE, 1, "t")
    (call,) = calls
    assert len(call.keys) == 6 + len({e.aggregate_id for e in events})


def test_an_event_without_a_stats_rule_is_refused_before_any_call_and_the_rest_are_sent() -> None:
    events = _events(4)
    odd = events[2].model_copy(update={"event_type": "CampaignArchived", "aggregate_type": "campaign"})
    events[2] = odd
    calls, refused = plan_calls(events, BASE, BUCKETS, "t")
    assert list(refused) == [2] and "no rule for CampaignArchived" in refused[2]
    assert sorted(p for call in calls for p in call.positions) == [p for p in range(len(events)) if p != 2]
