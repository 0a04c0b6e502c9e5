"""Figure 3: POST /campaigns against the same MongoDB transaction run in a bare loop.

An httpx async client keeps `concurrency` requests in flight until `count` are answered (no
Idempotency-Key, so the API runs exactly the transaction the raw loop runs: insert the state
document, insert the event, commit). Both sides write to the bench's database on the same
server; they alternate in rounds so drift in the background load falls on both.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass

import httpx

from bench.raw_limits import Rate, raw_transactions
from bench.report import Figure
from service_runtime.settings import Settings

CAMPAIGN = {
    "name": "Bench campaign",
    "description": "",
    "channel": "email",
    "budget": {"amount": "100.00", "currency": "EUR"},
    "starts_at": "2027-03-01T00:00:00Z",
    "ends_at": "2027-03-31T00:00:00Z",
    "tags": ["bench"],
}


@dataclass
class ApiRun:
    rate: Rate
    latencies_ms: list[float]
    failures: int


async def post_campaigns(command_url: str, token: str, count: int, concurrency: int) -> ApiRun:
    latencies: list[float] = []
    failures = 0
    remaining = iter(range(count))
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async with httpx.AsyncClient(base_url=command_url, timeout=60, limits=limits) as client:

        async def sender() -> None:
            nonlocal failures
            for _ in remaining:
                sent = time.perf_counter()
                answer = await client.post("/campaigns", json=CAMPAIGN, headers=headers)
                latencies.append((time.perf_counter() - sent) * 1000)
                if answer.status_code != 201:
                    failures += 1

        started = time.perf_counter()
        await asyncio.gather(*(sender() for _ in range(concurrency)))
        seconds = time.perf_counter() - started
    return ApiRun(Rate(count - failures, seconds), latencies, failures)


def _percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else 0.0


async def measure(
    settings: Settings,
    command_url: str,
    token: str,
    owner_id: str,
    *,
    count: int,
    concurrency: int,
    rounds: int,
) -> Figure:
    per_round = max(1, count // rounds)
    # A short warm-up of both (connections, indexes, the first transactions).
    await post_campaigns(command_url, token, concurrency * 2, concurrency)
    await raw_transactions(settings, concurrency * 2, concurrency, owner_id)
    api_runs: list[ApiRun] = []
    raw_runs: list[Rate] = []
    for _ in range(rounds):
        api_runs.append(await post_campaigns(command_url, token, per_round, concurrency))
        raw_runs.append(await raw_transactions(settings, per_round, concurrency, owner_id))
    api_done = sum(r.rate.count for r in api_runs)
    api_seconds = sum(r.rate.seconds for r in api_runs)
    raw_done = sum(r.count for r in raw_runs)
    raw_seconds = sum(r.seconds for r in raw_runs)
    api_rate, raw_rate = api_done / api_seconds, raw_done / raw_seconds
    latencies = [ms for r in api_runs for ms in r.latencies_ms]
    failures = sum(r.failures for r in api_runs)
    if failures:
        raise RuntimeError(f"{failures} POST /campaigns were not answered 201")
    ratio = api_rate / raw_rate
    return Figure(
        key="commands",
        title=f"Command API POST /campaigns (concurrency {concurrency})",
        measured=(
            f"{api_rate:,.0f} req/s, p50 {_percentile(latencies, 50):.0f} ms, "
            f"p99 {_percentile(latencies, 99):.0f} ms"
        ),
        limit=f"{raw_rate:,.0f} txn/s",
        ratio=round(ratio, 3),
        goal="≥ 0.6",
        met=ratio >= 0.6,
        how=(
            f"{api_done} POSTs by an httpx async client, {concurrency} in flight, against a raw "
            f"pymongo loop of {raw_done} transactions (insert state document + insert event, "
            f"commit) at the same concurrency on the same database; {rounds} alternating rounds; "
            "only the command API and the stack running"
        ),
        data={
            "api_requests": api_done,
            "api_seconds": round(api_seconds, 2),
            "raw_transactions": raw_done,
            "raw_seconds": round(raw_seconds, 2),
            "api_rounds_per_second": [round(r.rate.per_second, 1) for r in api_runs],
            "raw_rounds_per_second": [round(r.per_second, 1) for r in raw_runs],
            "concurrency": concurrency,
        },
    )
