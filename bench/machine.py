"""What a result was measured on: the machine, the servers and the libraries, by version."""

from __future__ import annotations

import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient

from service_runtime.redis_client import connect_redis
from service_runtime.settings import Settings
from tests.support.stack import REPO

LIBRARIES = (
    "fastapi",
    "starlette",
    "uvicorn",
    "uvloop",
    "httptools",
    "pydantic",
    "faststream",
    "aiokafka",
    "redis",  # redis-py, the client (the server is `redis_server`)
    "hiredis",
    "pymongo",
    "orjson",
    "httpx",
)


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _kafka_version() -> str:
    # The stack's Kafka recipe pins the version it downloads (infra/local/recipes/kafka_server.py).
    from infra.local.recipes.kafka_server import kafka_version

    return kafka_version()


def _secantus_version() -> str | None:
    found = sorted((REPO / ".local" / "tools" / "secantus").glob("lib/python*/site-packages/secantusdb-*"))
    if not found:
        return None
    match = re.match(r"secantusdb-(.+)\.dist-info", found[-1].name)
    return match.group(1) if match else None


def _wrk_version() -> str:
    try:
        out = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return "missing"
    return out.split("Copyright")[0].strip()


def host_calibration(rounds: int = 3) -> dict[str, int]:
    """Two fixed loops timed at the start of a run, best of `rounds`, so runs on different hosts
    (or hours) can be told apart by the host's speed, not only by the figures' own limits: a
    pure-Python loop (the services' and the projectors' kind of work) and one-byte round trips
    over a local socket pair (a send and a receive each way: the kernel's share of every request).
    Neither is a goal; the two, three rounds each, take about a quarter of a second."""
    python_steps, trips = 1_000_000, 5_000
    python_best = trips_best = float("inf")
    left, right = socket.socketpair()
    try:
        for _ in range(rounds):
            started = time.perf_counter()
            total = 0
            for i in range(python_steps):
                total += i
            python_best = min(python_best, time.perf_counter() - started)
            started = time.perf_counter()
            for _ in range(trips):
                left.send(b"x")
                right.recv(1)
                right.send(b"x")
                left.recv(1)
            trips_best = min(trips_best, time.perf_counter() - started)
    finally:
        left.close()
        right.close()
    return {
        "python_loop_steps_per_second": round(python_steps / python_best),
        "socket_round_trips_per_second": round(trips / trips_best),
    }


async def describe(settings: Settings) -> dict[str, Any]:
    redis = connect_redis(settings)
    try:
        redis_version = (await redis.info("server"))["redis_version"]
    finally:
        await redis.aclose()
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(settings.mongo_url)
    try:
        mongo_version = (await mongo.admin.command("buildInfo")).get("version")
    finally:
        await mongo.close()
    secantus = None if shutil.which("mongod") else _secantus_version()
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, "-m", "bench", *sys.argv[1:]]),
        # The BENCH_* variables the run was given (the knobs' values are in `knobs`) and the code.
        "environment": {k: v for k, v in sorted(os.environ.items()) if k.startswith("BENCH_")},
        "commit": _commit(),
        "machine": {
            "cpu_model": cpu_model(),
            "cores": os.cpu_count(),
            "kernel": platform.release(),
            "load_average_at_start": load_average(),
            "calibration": host_calibration(),
        },
        "versions": {
            "python": platform.python_version(),
            "kafka": _kafka_version(),
            "redis_server": redis_version,
            "mongodb_server": (
                f"SecantusDB {secantus} (reports MongoDB {mongo_version})" if secantus else mongo_version
            ),
            "wrk": _wrk_version(),
            **{name: _library_version(name) for name in LIBRARIES},
        },
    }


def _commit() -> dict[str, Any]:
    """The commit measured, and whether the work tree differed from it."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
        return done.stdout.strip()

    dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    return {"sha": git("rev-parse", "HEAD") or None, "dirty": dirty}


def _library_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None
