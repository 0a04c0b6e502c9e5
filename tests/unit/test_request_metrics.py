"""Request metrics tallied in-process: the same series as one observation per request, soon enough."""

from __future__ import annotations

import asyncio
import uuid

from prometheus_client import REGISTRY

from service_runtime.http import LATENCY, METRICS_FLUSH_SECONDS, REQUESTS, RequestMetrics
from tests.support.waiting import eventually

LATENCIES = [0.0004, 0.001, 0.0011, 0.003, 0.003, 0.2, 7.5]


def samples(service: str) -> dict[tuple[str, str], float]:
    """Every http_* sample of `service`, by (sample name, bucket bound or '')."""
    found: dict[tuple[str, str], float] = {}
    for metric in REGISTRY.collect():
        for sample in metric.samples:
            if sample.labels.get("service") == service and sample.name.startswith("http_"):
                found[(sample.name, sample.labels.get("le", ""))] = sample.value
    return found


def counted(service: str) -> float:
    return samples(service).get(("http_request_duration_seconds_count", ""), 0)


def without_created(found: dict[tuple[str, str], float]) -> dict[tuple[str, str], float]:
    return {key: value for key, value in found.items() if not key[0].endswith("_created")}


async def test_a_flushed_tally_reads_as_one_observation_per_request() -> None:
    tallied, observed = f"svc-{uuid.uuid4().hex}", f"svc-{uuid.uuid4().hex}"
    metrics = RequestMetrics(tallied)
    for seconds in LATENCIES:
        metrics.record("GET", "/campaigns/{campaign_id}", "200", seconds)
        REQUESTS.labels(observed, "GET", "/campaigns/{campaign_id}", "200").inc()
        LATENCY.labels(observed, "GET", "/campaigns/{campaign_id}").observe(seconds)
    assert samples(tallied) == {}

    RequestMetrics.flush_all()

    assert without_created(samples(tallied)) == without_created(samples(observed))
    assert samples(tallied)[("http_requests_total", "")] == len(LATENCIES)
    assert samples(tallied)[("http_request_duration_seconds_bucket", "0.001")] == 2


async def test_a_tally_reaches_the_series_without_anyone_asking() -> None:
    service = f"svc-{uuid.uuid4().hex}"
    metrics = RequestMetrics(service)
    metrics.record("GET", "/health/live", "200", 0.002)
    metrics.record("GET", "/health/live", "503", 0.002)
    await eventually(lambda: counted(service) == 2, timeout=METRICS_FLUSH_SECONDS * 10, what="the flush")
    metrics.record("GET", "/health/live", "200", 0.002)
    await eventually(lambda: counted(service) == 3, timeout=METRICS_FLUSH_SECONDS * 10, what="the flush")


def test_a_tally_after_its_first_loop_closed_is_flushed_on_the_next_loop() -> None:
    service = f"svc-{uuid.uuid4().hex}"
    metrics = RequestMetrics(service)

    async def first() -> None:  # its flush timer closes with its loop, unfired
        metrics.record("GET", "/health/live", "200", 0.002)

    async def second() -> None:
        metrics.record("GET", "/health/live", "200", 0.002)
        await eventually(lambda: counted(service) == 2, timeout=METRICS_FLUSH_SECONDS * 10, what="the flush")

    asyncio.run(first())
    assert counted(service) == 0
    asyncio.run(second())
