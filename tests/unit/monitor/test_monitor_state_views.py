"""How the monitor reads the processes' reports: stale or missing reports show as such."""

from __future__ import annotations

import orjson

from query_api.adapters.monitor_state import liveness, projector_view, relay_view, worker_view

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
