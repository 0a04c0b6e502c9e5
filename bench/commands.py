"""Figure 3: POST /campaigns against the same MongoDB transaction run in a bare loop.

wrk (C, pinned to the last core, so the client takes as little CPU from the servers as
possible) posts the same body on `concurrency` connections for a round; without an
Idempotency-Key each POST creates a new campaign, so the API runs exactly the transaction the
raw loop runs: one bulkWrite inserting the state document and the event, then commit. The raw
loop then runs as many transactions as the API answered, at the same concurrency, on the same database. Rounds
alternate so drift in the background load falls on both sides.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import asdict

import orjson

from bench.memory import CpuWindow
from bench.raw_limits import Rate, raw_transactions
from bench.report import Figure
from bench.wrk import WrkResult, run_wrk
from service_runtime.settings import Settings

CAMPAIGN = {
    "name": "Bench campaign",
    "description": "",
    "channel": "email",
    "budget": {"amount": "100.00", "currency": "EUR"},
    "starts_at": "2099-03-01T00:00:00Z",
    "ends_at": "2099-03-31T00:00:00Z",
    "tags": ["bench"],
}


async def post_campaigns(command_url: str, token: str, seconds: int, concurrency: int) -> WrkResult:
    result = await asyncio.to_thread(
        run_wrk,
        f"{command_url}/campaigns",
        connections=concurrency,
        seconds=seconds,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        post_body=orjson.dumps(CAMPAIGN),
    )
    if result.non_2xx or result.errors:
        raise RuntimeError(f"POST /campaigns answered errors under load: {result}")
    return result


async def measure(
    settings: Settings,
    command_url: str,
    token: str,
    owner_id: str,
    *,
    seconds: int,
    concurrency: int,
    rounds: int,
    processes: Callable[[], dict[str, list[int]]],
) -> Figure:
    # A short warm-up of both (connections, indexes, the first transactions).
    await post_campaigns(command_url, token, 2, concurrency)
    await raw_transactions(settings, concurrency * 4, concurrency, owner_id)
    api_runs: list[WrkResult] = []
    raw_runs: list[Rate] = []
    api_cpu: list[dict[str, float]] = []
    raw_cpu: list[dict[str, float]] = []
    for _ in range(rounds):
        window = CpuWindow(processes())
        api = await post_campaigns(command_url, token, seconds, concurrency)
        api_cpu.append(window.shares())
        api_runs.append(api)
        window = CpuWindow(processes())
        raw_runs.append(await raw_transactions(settings, api.requests, concurrency, owner_id))
        raw_cpu.append(window.shares())
    api_done = sum(r.requests for r in api_runs)
    api_rate = sum(r.requests_per_second for r in api_runs) / len(api_runs)
    raw_done = sum(r.count for r in raw_runs)
    raw_rate = raw_done / sum(r.seconds for r in raw_runs)
    p50 = max(r.p50_ms for r in api_runs)
    p99 = max(r.p99_ms for r in api_runs)
    ratio = api_rate / raw_rate
    return Figure(
        key="commands",
        title=f"Command API POST /campaigns (concurrency {concurrency})",
        measured=f"{api_rate:,.0f} req/s, p50 {p50:.0f} ms, p99 {p99:.0f} ms",
        limit=f"{raw_rate:,.0f} txn/s",
        ratio=round(ratio, 3),
        goal="≥ 0.6",
        met=ratio >= 0.6,
        how=(
            f"wrk (pinned to the last core) posting on {concurrency} connections, {rounds} rounds "
            f"of {seconds} s ({api_done} campaigns created), each followed by a raw pymongo loop "
            f"running as many transactions (one bulkWrite of state document + event, commit) at the "
            "same concurrency on the same database; only the command API and the stack running. "
            "The raw loop runs one command a transaction; the command API commits the commands "
            "that queue for a transaction together (group commit), so it can pass 1"
        ),
        data={
            "api_rounds": [asdict(r) for r in api_runs],
            "raw_rounds_per_second": [round(r.per_second, 1) for r in raw_runs],
            "raw_transactions": raw_done,
            "concurrency": concurrency,
            # CPU of each process group over each round, in cores (2 = both cores busy).
            "cpu_cores_during_api_rounds": api_cpu,
            "cpu_cores_during_raw_rounds": raw_cpu,
        },
    )
