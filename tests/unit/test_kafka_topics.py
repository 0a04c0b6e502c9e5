"""The topic check and the reconcile plan (service_runtime/kafka_topics.py), on described states."""

from __future__ import annotations

from service_runtime.kafka_topics import Expected, TopicState, plan, problems

EXPECTED = Expected(partitions=6, replication_factor=3, min_insync_replicas=2)


def test_topics_as_configured_have_no_problem_and_nothing_to_do() -> None:
    states = [TopicState("users.events", 6, 3, 2), TopicState("campaigns.events", 6, 3, 2)]
    assert problems(EXPECTED, states) == []
    assert plan(EXPECTED, states).empty


def test_each_problem_names_the_topic_what_was_expected_and_what_was_found() -> None:
    states = [
        TopicState("users.events", 3, 3, 2),
        TopicState("campaigns.events", 6, 1, 1),
        TopicState("x.dlq"),
    ]
    assert problems(EXPECTED, states) == [
        "topic users.events has 3 partitions, expected 6",
        "topic campaigns.events has replication factor 1, expected 3",
        "topic x.dlq does not exist (expected 6 partitions, replication factor 3)",
    ]


def test_min_isr_alone_does_not_stop_a_service_but_reconcile_sets_it() -> None:
    states = [TopicState("users.events", 6, 3, 1)]
    assert problems(EXPECTED, states) == []
    assert plan(EXPECTED, states).set_min_isr == ["users.events"]


def test_reconcile_creates_missing_and_grows_but_never_shrinks_nor_reassigns() -> None:
    todo = plan(
        EXPECTED,
        [
            TopicState("missing"),
            TopicState("fewer", 4, 3, 2),
            TopicState("more", 12, 3, 2),
            TopicState("under-replicated", 6, 1, 2),
        ],
    )
    assert todo.create == ["missing"]
    assert todo.grow == {"fewer": 6}
    assert "more" not in todo.grow and "under-replicated" not in todo.grow
    assert len(todo.refused) == 2
    assert "more" in todo.refused[0] and "cannot shrink" in todo.refused[0]
    assert "under-replicated" in todo.refused[1] and "reassignment" in todo.refused[1]
