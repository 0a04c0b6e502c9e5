"""Lag, dead-letter and throughput samples computed from Kafka offsets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from projectors.monitoring.lag import Offsets, lag_sample, throughput_sample
from readmodels.groups import MonitoredGroup

USERS, CAMPAIGNS = "users.events", "campaigns.events"
DLQ = ["users.events.dlq", "campaigns.events.dlq"]
GROUPS = [
    MonitoredGroup("campaigns", "projection", "projector.campaigns", (CAMPAIGNS,), counts_projected=True),
    MonitoredGroup("users", "projection", "projector.users", (USERS,), counts_projected=True),
    MonitoredGroup("reports", "worker", "worker.reports", (CAMPAIGNS,)),
]
PARTITIONS = {USERS: [0, 1], CAMPAIGNS: [0, 1], DLQ[0]: [0], DLQ[1]: [0]}
T0 = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)


def offsets(ends: dict, committed: dict, starts: dict | None = None) -> Offsets:
    return Offsets(starts=starts or {}, ends=ends, committed=committed)


def sample(at: datetime, ends: dict, committed: dict, starts: dict | None = None) -> dict:
    return lag_sample(GROUPS, PARTITIONS, offsets(ends, committed, starts), DLQ, [USERS, CAMPAIGNS], at)


ENDS = {(USERS, 0): 4, (USERS, 1): 6, (CAMPAIGNS, 0): 10, (CAMPAIGNS, 1): 0, (DLQ[0], 0): 0, (DLQ[1], 0): 3}


def test_lag_per_partition_is_what_the_group_has_not_committed() -> None:
    committed = {"projector.campaigns": {(CAMPAIGNS, 0): 7, (CAMPAIGNS, 1): -1}}
    result = sample(T0, ENDS, committed)
    campaigns = next(g for g in result["groups"] if g["name"] == "campaigns")
    assert campaigns["lag"] == 3
    assert campaigns["partitions"] == [
        {"topic": CAMPAIGNS, "partition": 0, "committed": 7, "end": 10, "lag": 3},
        {"topic": CAMPAIGNS, "partition": 1, "committed": None, "end": 0, "lag": 0},
    ]


def test_a_group_that_never_committed_is_behind_by_the_whole_log() -> None:
    result = sample(T0, ENDS, {})
    users = next(g for g in result["groups"] if g["name"] == "users")
    assert users["lag"] == 10
    assert [p["committed"] for p in users["partitions"]] == [None, None]


def test_lag_counts_from_the_log_start_when_old_records_were_deleted() -> None:
    starts = {(USERS, 0): 3}
    result = sample(T0, ENDS, {"projector.users": {(USERS, 0): 1}}, starts)
    users = next(g for g in result["groups"] if g["name"] == "users")
    assert users["partitions"][0]["lag"] == 1  # end 4 - start 3


def test_dead_letters_are_the_records_in_each_dlq_topic() -> None:
    result = sample(T0, ENDS, {}, {(DLQ[1], 0): 1})
    assert result["dead_letters"] == {"users.events.dlq": 0, "campaigns.events.dlq": 2}


def test_throughput_is_the_difference_of_two_samples_per_second() -> None:
    first = sample(T0, ENDS, {"projector.campaigns": {(CAMPAIGNS, 0): 5}})
    later_ends = {**ENDS, (CAMPAIGNS, 0): 20, (USERS, 1): 16}
    second = sample(
        T0 + timedelta(seconds=5),
        later_ends,
        {"projector.campaigns": {(CAMPAIGNS, 0): 15}, "projector.users": {(USERS, 1): 6}},
    )
    rates = throughput_sample(first, second)
    assert rates is not None
    assert rates["published"] == 20
    assert rates["published_per_second"] == 4.0
    # campaigns moved 5 -> 15; users moved from the log start (0) to 6 on partition 1
    assert rates["projected"] == 16
    assert rates["consumed_per_second"]["campaigns"] == 2.0
    assert rates["consumed_per_second"]["reports"] == 0.0
    assert rates["interval_seconds"] == 5.0
    assert rates["at"] == "2027-03-01T12:00:05.000Z"


def test_no_throughput_without_an_earlier_sample_and_never_a_negative_one() -> None:
    first = sample(T0, ENDS, {})
    assert throughput_sample(None, first) is None
    assert throughput_sample(first, first) is None
    recreated = sample(T0 + timedelta(seconds=2), {k: 0 for k in ENDS}, {})
    rates = throughput_sample(first, recreated)
    assert rates is not None
    assert rates["published"] == 0
    assert rates["projected"] == 0
