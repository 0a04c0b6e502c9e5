"""The local stack: idempotent start, clear refusal of a taken port, real servers answering."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import redis
from pymongo import MongoClient

from service_runtime.settings import Settings
from tests.support.stack import REPO, STACK


def run_stack(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(STACK), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=env or dict(os.environ),
        check=False,
        timeout=300,
    )


def pids() -> dict[str, str]:
    run_dir = REPO / Settings().local_dir / "run"
    return {p.stem: p.read_text() for p in run_dir.glob("*.pid")}


def test_second_up_leaves_running_servers_alone(stack: None) -> None:
    before = pids()
    result = run_stack("up")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("already running") == 4
    assert pids() == before


def test_status_names_every_server_and_where_it_listens(stack: None) -> None:
    result = run_stack("status")
    assert result.returncode == 0
    settings = Settings()
    for name, where in [
        ("redis", settings.redis_url.rsplit("/", 1)[0]),
        ("kafka", f"kafka://{settings.kafka_bootstrap}"),
        ("mongo", settings.mongo_url.split("?")[0].rstrip("/")),
        ("smtp", f"smtp://{settings.smtp_host}:{settings.smtp_port}"),
    ]:
        assert any(name in line and "up" in line and where in line for line in result.stdout.splitlines())


def test_a_port_taken_by_another_process_is_reported_not_crashed_on(stack: None, tmp_path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        env = {
            **os.environ,
            "CAMPAIGNS_LOCAL_DIR": str(tmp_path / "local"),
            "CAMPAIGNS_REDIS_URL": f"redis://127.0.0.1:{port}/0",
        }
        result = run_stack("up", "redis", env=env)
    assert result.returncode == 1
    assert f"port 127.0.0.1:{port} for redis is taken by a process this stack did not start" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_servers_are_real_and_mongo_supports_transactions(stack: None) -> None:
    settings = Settings()
    assert redis.Redis.from_url(settings.redis_url).ping()
    with MongoClient(settings.mongo_url) as client:
        db = client["stack_probe"]
        with client.start_session() as session, session.start_transaction():
            db.things.insert_one({"_id": "a"}, session=session)
            session.abort_transaction()
        assert db.things.count_documents({}) == 0
        client.drop_database("stack_probe")
