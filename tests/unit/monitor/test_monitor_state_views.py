"""How the monitor reads the processes' reports: stale or missing reports show as such."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson

from command_api.adapters.due_transitions import TimerQueue
from command_api.adapters.scheduler_status import SchedulerReport
from command_api.domain.campaign import DueTimer
from query_api.adapters.monitor_state import (
    liveness,
    projector_view,
    relay_view,
    scheduler_view,
    worker_view,
)

NOW = 1_800_000_000.0


def test_liveness_from_the_age_of_the_last_report() -> None:
    assert liveness(None) == "down"
    assert liveness(1.0) == "running"
    assert liveness(60.0) == "stale"


def test_a_projector_view_has_numbers_its_state_and_heartbeat_age() -> None:
    status = {"heartbeat_at": f"{NOW - 3:.3f}", "applied_total": "12", "lag": "0", "generation": "g1"}
    view = projector_view(status, NOW)
    assert view["applied_total"] == 12
    assert view["lag"] == 0
    assert view["generation"] == "g1"
    assert view["state"] == "running"
    assert view["heartbeat_age_seconds"] == 3.0
    assert projector_view({}, NOW)["state"] == "down"


def test_a_relay_without_a_report_is_down_and_a_silent_one_stale() -> None:
    assert relay_view(None, NOW) == {"state": "down", "backlog": None}
    report = {"backlog": 4, "updated_at": "2027-01-15T07:59:00.000Z"}
    view = relay_view(orjson.dumps(report), NOW)
    assert view["backlog"] == 4
    assert view["state"] == "stale"


def test_a_worker_view_keeps_stopped_and_marks_missing_as_down() -> None:
    assert worker_view(None, NOW)["state"] == "down"
    running = worker_view(orjson.dumps({"state": "running", "updated_at": NOW - 1}), NOW)
    assert running["state"] == "running"
    stopped = worker_view(orjson.dumps({"state": "stopped", "updated_at": NOW - 1}), NOW)
    assert stopped["state"] == "stopped"


def test_the_scheduler_view_shows_the_queue_lateness_and_which_instances_are_alive() -> None:
    now = datetime.fromtimestamp(NOW, UTC)
    due = now + timedelta(seconds=42)
    live = SchedulerReport("live")
    timer = DueTimer("c-1", "timer:c-1:v2:activate", "activate", now, now)
    live.fired(timer, timedelta(milliseconds=120))
    fresh = live.status(TimerQueue(pending=3, overdue=0, next_due_at=due), now - timedelta(seconds=1))
    old = SchedulerReport("gone").status(TimerQueue(0, 0, None), now - timedelta(minutes=5))
    view = scheduler_view({b"live": orjson.dumps(fresh), b"gone": orjson.dumps(old)}, NOW)
    assert view["state"] == "running"
    assert view["pending"] == 3
    assert datetime.fromisoformat(view["next_due_at"]) == due
    assert view["last_lateness_ms"] == 120
    assert view["fired_total"] == 1
    assert view["instances"]["gone"]["state"] == "stale"
    assert (view["counts_deferred"], view["counted_age_seconds"]) == (False, None)
    assert scheduler_view({}, NOW)["state"] == "down"


def test_the_scheduler_view_says_how_old_counts_are_that_wait_for_a_backlog() -> None:
    now = datetime.fromtimestamp(NOW, UTC)
    counted = now - timedelta(seconds=25)
    queue = TimerQueue(pending=9000, overdue=1000, next_due_at=now, counted_at=counted, deferred=True)
    report = SchedulerReport("busy").status(queue, now)
    view = scheduler_view({b"busy": orjson.dumps(report)}, NOW)
    assert (view["pending"], view["counts_deferred"], view["counted_age_seconds"]) == (9000, True, 25.0)
