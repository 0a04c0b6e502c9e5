"""The console's pure parts: re-drive requests checked before anything runs, the audit counter's
bounded result label, and a verify's progress published at most twice a second."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from events import Topics
from projectors.entrypoints.console_operations import PublishedProgress
from query_api.entrypoints.http.console import RedriveRequest, _invalid
from service_runtime.console_audit import result_label

TOPICS = Topics("t1.")
DLQ = Topics.dlq(TOPICS.campaigns)


def field_of(**body: Any) -> str | None:
    problem = _invalid(RedriveRequest(**body), TOPICS)
    return None if problem is None or not problem.errors else str(problem.errors[0]["field"])


def test_a_redrive_names_one_record_of_this_system_or_one_aggregate_and_is_confirmed() -> None:
    assert field_of(ref=f"{DLQ}:0:5", confirm=True) is None
    assert field_of(topic=DLQ, aggregate="a-1", confirm=True) is None
    assert field_of(ref=f"{DLQ}:0:5") == "confirm"
    assert field_of(ref="other.events.dlq:0:5", confirm=True) == "ref"
    assert field_of(ref=f"{TOPICS.campaigns}:0:5", confirm=True) == "ref"
    assert field_of(ref="not a ref", confirm=True) == "ref"
    assert field_of(ref=f"{DLQ}:0:5", topic=DLQ, confirm=True) == "ref"
    assert field_of(confirm=True) == "topic"
    assert field_of(topic=DLQ, confirm=True) == "aggregate"
    assert field_of(topic=TOPICS.campaigns, aggregate="a-1", confirm=True) == "topic"


def test_the_counted_result_is_a_word_never_a_message() -> None:
    assert result_label("ok") == "ok"
    assert result_label("failed: KafkaConnectionError: broker 3 is down") == "failed"
    assert result_label("") == "unknown"


class SavedStates:
    def __init__(self) -> None:
        self.doc: dict[str, Any] = {"progress": {}}
        self.saved: list[dict[str, Any]] = []

    async def save(self) -> None:
        self.saved.append(dict(self.doc["progress"]))


async def test_progress_is_published_on_each_pass_and_then_at_most_every_half_second() -> None:
    now = [0.0]
    state = SavedStates()
    progress = PublishedProgress(state, clock=lambda: now[0])  # type: ignore[arg-type]
    progress.start_pass("build", 1000)
    for _ in range(10):
        progress.advance(10)  # within the same half second: not published
    now[0] = 0.6
    progress.advance(10)
    progress.say("digests differ")
    await progress.settle()
    await asyncio.sleep(0)
    # The pass's start, one advance past half a second, and the message: not the 10 in between.
    # (Each save writes the state as it is when it runs: the newest figures.)
    assert len(state.saved) == 3
    assert state.saved[-1]["done"] == 110
    assert state.saved[-1]["message"] == "digests differ"


@pytest.mark.parametrize("text", ["x.dlq:a:1", ":0:1"])
def test_malformed_refs_are_refused_by_field(text: str) -> None:
    assert field_of(ref=text, confirm=True) == "ref"


def test_a_rebuilds_result_names_each_projections_generations_and_tally() -> None:
    from projectors.entrypoints.console_operations import rebuild_result
    from projectors.replay.application.rebuild import ProjectionRebuilt, RebuildReport
    from projectors.replay.domain.tally import ProjectionTally

    tally = ProjectionTally(applied=7, duplicates=1, parked=2, refused=0)
    report = RebuildReport(
        source="mongo",
        events=10,
        passes=3,
        seconds=1.23456,
        invalid=0,
        projections=[ProjectionRebuilt("users", "users.1", "users.2", tally, 4)],
    )
    assert rebuild_result(report) == (
        "ok",
        {
            "events": 10,
            "passes": 3,
            "seconds": 1.235,
            "invalid": 0,
            "projections": [
                {
                    "projection": "users",
                    "old_generation": "users.1",
                    "generation": "users.2",
                    "applied": 7,
                    "duplicates": 1,
                    "parked": 2,
                    "refused": 0,
                    "old_keys_removed": 4,
                }
            ],
        },
    )


def test_a_verify_or_rebuild_names_a_known_projection() -> None:
    from query_api.entrypoints.http.console import _unknown_projection

    assert _unknown_projection("all") is None and _unknown_projection("users") is None
    problem = _unknown_projection("nope")
    assert problem is not None and problem.errors == [
        {"field": "projection", "reason": "one of: campaigns, users, stats, all"}
    ]
