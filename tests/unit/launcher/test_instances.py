"""Scaled-out services: the launcher's plan of instances, and starting and stopping all of them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from infra.local.stack import Stack
from launcher.instances import plan_instances
from launcher.supervisor import Supervisor
from service_runtime import processes
from service_runtime.settings import Settings
from tests.support.stack import free_port

SERVICES = ["command-api", "query-api", "relay", "scheduler", "projectors", "workers"]


def test_one_instance_of_each_service_keeps_the_plain_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CAMPAIGNS_TOPOLOGY", raising=False)
    plan = plan_instances(Settings(), SERVICES)
    assert [i.name for i in plan] == SERVICES
    relay = next(i for i in plan if i.service == "relay")
    assert relay.env == {"CAMPAIGNS_RELAY_METRICS_PORT": "9101"}


def test_the_cluster_topology_runs_two_of_the_relay_projectors_and_workers_on_their_own_ports(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CAMPAIGNS_TOPOLOGY", "cluster")
    plan = plan_instances(Settings(), SERVICES)
    assert [i.name for i in plan] == [
        "command-api",
        "query-api",
        "relay-1",
        "relay-2",
        "scheduler",
        "projectors-1",
        "projectors-2",
        "workers-1",
        "workers-2",
    ]
    ports = [i.metrics_port for i in plan if i.metrics_port is not None]
    assert ports == [9101, 9111, 9102, 9112, 9103, 9113]
    assert len(set(ports)) == len(ports)
    assert plan[3].env == {"CAMPAIGNS_RELAY_METRICS_PORT": "9111"}


def test_an_instance_count_set_explicitly_wins_over_the_topology(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAMPAIGNS_TOPOLOGY", "cluster")
    monkeypatch.setenv("CAMPAIGNS_PROJECTORS_INSTANCES", "3")
    monkeypatch.setenv("CAMPAIGNS_RELAY_INSTANCES", "1")
    names = [i.name for i in plan_instances(Settings(), ["relay", "projectors"])]
    assert names == ["relay", "projectors-1", "projectors-2", "projectors-3"]


def test_detached_instances_are_listed_with_their_pids_and_all_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CAMPAIGNS_TOPOLOGY", raising=False)
    settings = Settings(local_dir=str(tmp_path / "local"), relay_instances=2, workers_instances=3)
    sleeper = ["sleep", "60"]
    supervisor = Supervisor(
        tmp_path,
        settings,
        ["relay", "workers"],
        commands={"relay": sleeper, "workers": sleeper},
        ready_urls=[f"http://127.0.0.1:{free_port()}/"],
    )
    pids = supervisor.start_detached()
    try:
        assert sorted(pids) == ["relay-1", "relay-2", "workers-1", "workers-2", "workers-3"]
        assert all(processes.pid_alive(pid) for pid in pids.values())
        listed = {s["name"]: s for s in Stack(settings).services_running()}
        assert {name: s["pid"] for name, s in listed.items()} == pids
        assert listed["workers-3"]["service"] == "workers"
        assert listed["workers-3"]["instance"] == 3
        assert listed["workers-3"]["metrics_port"] == settings.workers_metrics_port + 20
        meta = json.loads((supervisor.run_dir / "relay-2.json").read_text())
        assert meta["metrics_port"] == settings.relay_metrics_port + 10
    finally:
        # A plan with fewer instances still stops every one a pid file names.
        Supervisor(tmp_path, settings.model_copy(update={"workers_instances": 1}), ["relay"]).stop_detached()
    assert not any(processes.pid_alive(pid) for pid in pids.values())
    assert not list(supervisor.run_dir.glob("*.pid"))
    assert not list(supervisor.run_dir.glob("*.json"))
