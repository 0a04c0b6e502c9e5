"""Figure 4: how soon a command's version is readable, at a steady, open-loop command rate.

Command i is due at start + i / rate whatever happened to the ones before it (open loop: a
slow server gets a queue, not a pause; at most MAX_IN_FLIGHT are on the wire, the rest wait
for a connection, and a command's latency counts from when it was due). When its 201 arrives,
the client asks the query API for that version with `GET /campaigns/{id}?min_version=V`, which
waits server-side for the projector's notification; a 503 (wait bound passed) is asked again.
Freshness is the time from the 201 to the 200 that carries the version. The client is
bench/http_client.py.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass, field

from bench.commands import CAMPAIGN
from bench.http_client import ConnectionFailed, KeepAliveClient
from bench.report import Figure
from bench.stages import CommandTimes

MAX_IN_FLIGHT = 200


@dataclass
class FreshnessRun:
    scheduled: int
    accepted: int = 0
    failed: int = 0
    read_failed: int = 0
    read_errors: int = 0
    freshness_ms: list[float] = field(default_factory=list)
    command_ms: list[float] = field(default_factory=list)
    last_accepted_at: float = 0.0
    seconds: float = 0.0


def _q(values: list[float], q: int) -> float:
    if len(values) < 2:
        return values[0] if values else 0.0
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


async def run(
    command_url: str,
    query_url: str,
    token: str,
    *,
    rate: float,
    seconds: float,
    trace: list[CommandTimes] | None = None,
) -> FreshnessRun:
    """The open-loop run; with `trace`, each accepted command's id, version, 201 and 200 on the
    wall clock are appended to it (bench/stages.py)."""
    count = int(rate * seconds)
    result = FreshnessRun(scheduled=count)
    headers = {"Authorization": f"Bearer {token}"}
    # At most MAX_IN_FLIGHT commands on the wire (one connection each): past that the server is
    # not keeping up anyway, and the rest wait for a connection.
    commands = KeepAliveClient(command_url, MAX_IN_FLIGHT, headers)
    queries = KeepAliveClient(query_url, MAX_IN_FLIGHT, headers)

    async def one(due: float) -> None:
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        sent = due  # latency from when the command was due: waiting for a connection counts
        try:
            answer = await commands.request("POST", "/campaigns", CAMPAIGN)
        except ConnectionFailed:
            result.failed += 1
            return
        accepted, accepted_wall = time.perf_counter(), time.time()
        if answer.status != 201:
            result.failed += 1
            return
        result.accepted += 1
        result.last_accepted_at = accepted
        result.command_ms.append((accepted - sent) * 1000)
        body = answer.json()
        assert isinstance(body, dict)
        times = None
        if trace is not None:
            times = CommandTimes(body["id"], int(body["version"]), accepted_wall)
            trace.append(times)
        target = f"/campaigns/{body['id']}?min_version={body['version']}"
        for _ in range(30):
            try:
                read = await queries.request("GET", target)
            except ConnectionFailed:
                # e.g. a kept-alive connection the server closed as the request went out
                result.read_errors += 1
                continue
            if read.status == 200:
                result.freshness_ms.append((time.perf_counter() - accepted) * 1000)
                if times is not None:
                    times.seen = time.time()
                return
            if read.status != 503:
                break
        result.read_failed += 1

    try:
        start = time.perf_counter() + 0.2
        await asyncio.gather(*(one(start + i / rate) for i in range(count)))
        result.seconds = result.last_accepted_at - start if result.accepted else 0.0
    finally:
        await commands.close()
        await queries.close()
    return result


def figure(
    result: FreshnessRun, rate: float, seconds: float, cpu: dict[str, float], key: str = "freshness"
) -> Figure:
    values = result.freshness_ms
    p50, p99, worst = _q(values, 50), _q(values, 99), max(values, default=0.0)
    achieved = result.accepted / result.seconds if result.seconds else 0.0
    kept_up = achieved >= rate * 0.97 and result.failed == 0
    return Figure(
        key=key,
        title=f"Freshness at {rate:.0f} commands/s for {seconds:.0f} s",
        measured=f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {worst:.1f} ms",
        limit=f"{achieved:,.1f} commands/s achieved of {rate:.0f}",
        ratio=None,
        goal="p99 < 100 ms",
        met=p99 < 100 and kept_up and result.read_failed == 0,
        how=(
            "open-loop pacing (command i sent at i/rate s); after each 201 the client reads "
            "GET /campaigns/{id}?min_version=V, which waits server-side for the projector's "
            "notification; freshness = 201 to that 200; every service running"
        ),
        data={
            "p50_ms": round(p50, 2),
            "p99_ms": round(p99, 2),
            "max_ms": round(worst, 2),
            "scheduled": result.scheduled,
            "accepted": result.accepted,
            "command_failures": result.failed,
            "reads_not_fresh": result.read_failed,
            "read_attempts_without_answer": result.read_errors,
            "achieved_commands_per_second": round(achieved, 2),
            "command_latency_p50_ms": round(_q(result.command_ms, 50), 1),
            "command_latency_p99_ms": round(_q(result.command_ms, 99), 1),
            "command_latency_max_ms": round(max(result.command_ms, default=0.0), 1),
            "cpu_cores_during_run": cpu,
        },
    )
