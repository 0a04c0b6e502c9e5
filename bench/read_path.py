"""Figure 1: GET /campaigns/{id} on the query API against the bare ASGI app, both under wrk;
and the list query (`GET /campaigns?status=active&sort=-created_at&limit=20`) the same way.

The bare app runs on the same uvicorn (uvloop, httptools) with the same worker count and
answers the very bytes the query API returned for the same request (the campaign, or the
page). Rounds alternate (bare, query API, bare, query API...) so background noise falls on
both sides alike; each side's best round is kept.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import asdict

import httpx

from bench.report import Figure
from bench.wrk import WrkResult, run_wrk
from tests.support.stack import REPO, free_port


def start_bare_app(
    body: bytes, workers: int, path: str = "/campaigns/x"
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**os.environ, "BENCH_BARE_BODY": body.decode()}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "bench.bare_app:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}{path}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).content == body:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.kill()
    raise RuntimeError("the bare ASGI app did not answer")


def _against_bare(
    url: str,
    path: str,
    headers: dict[str, str],
    *,
    workers: int,
    connections: int,
    seconds: int,
    rounds: int,
    on_cluster: str | None = None,
) -> tuple[list[WrkResult], list[WrkResult], list[WrkResult], bytes]:
    """wrk on `url` and on the bare app answering its bytes (at the same `path`), and on
    `on_cluster` (the same request to a query API on the Redis Cluster) when given: every round
    of each side, and the body."""
    answer = httpx.get(url, headers=headers, timeout=5)
    answer.raise_for_status()
    body = answer.content
    bare, bare_url = start_bare_app(body, workers, path)
    cluster_runs: list[WrkResult] = []
    try:
        # Warm them all (JIT-free, but connection pools, token cache, allocator).
        run_wrk(bare_url, connections=connections, seconds=2)
        run_wrk(url, connections=connections, seconds=2, headers=headers)
        if on_cluster:
            run_wrk(on_cluster, connections=connections, seconds=2, headers=headers)
        bare_runs: list[WrkResult] = []
        api_runs: list[WrkResult] = []
        for _ in range(rounds):
            bare_runs.append(run_wrk(bare_url, connections=connections, seconds=seconds))
            api_runs.append(run_wrk(url, connections=connections, seconds=seconds, headers=headers))
            if on_cluster:
                cluster_runs.append(
                    run_wrk(on_cluster, connections=connections, seconds=seconds, headers=headers)
                )
    finally:
        os.killpg(bare.pid, 15)
        bare.wait(timeout=20)
    best = {"query API": max(api_runs, key=lambda r: r.requests_per_second)}
    if cluster_runs:
        best["query API on the cluster"] = max(cluster_runs, key=lambda r: r.requests_per_second)
    for side, result in best.items():
        if result.non_2xx or result.errors:
            raise RuntimeError(f"the {side} answered errors under load: {result}")
    return api_runs, bare_runs, cluster_runs, body


def _figure(
    key: str,
    title: str,
    what: str,
    goal: float,
    api_runs: list[WrkResult],
    bare_runs: list[WrkResult],
    body: bytes,
    *,
    workers: int,
    connections: int,
    seconds: int,
    rounds: int,
    **data: object,
) -> Figure:
    api = max(api_runs, key=lambda r: r.requests_per_second)
    limit = max(bare_runs, key=lambda r: r.requests_per_second)
    ratio = api.requests_per_second / limit.requests_per_second
    return Figure(
        key=key,
        title=title,
        measured=f"{api.requests_per_second:,.0f} req/s, p50 {api.p50_ms:.2f} ms, p99 {api.p99_ms:.2f} ms",
        limit=f"{limit.requests_per_second:,.0f} req/s, p50 {limit.p50_ms:.2f} ms, p99 {limit.p99_ms:.2f} ms",
        ratio=round(ratio, 3),
        goal=f"≥ {goal}",
        met=ratio >= goal,
        how=(
            f"wrk (Debian's, 1 thread, pinned to the last core) with {connections} connections, "
            f"{rounds} alternating rounds of {seconds} s each side, best round kept; {what}; the bare "
            f"ASGI app (bench/bare_app.py) on the same uvicorn with {workers} workers answers the same "
            f"{len(body)} bytes"
        ),
        data={
            "query_api": [asdict(r) for r in api_runs],
            "bare_app": [asdict(r) for r in bare_runs],
            "body_bytes": len(body),
            "workers": workers,
            "connections": connections,
            **data,
        },
    )


# Issue 21, item 6: the read path stays at ≥ 0.65 of the bare app (until session 12 the figure
# judged it against 0.5, the list query's floor).
READ_GOAL = 0.65


def measure(
    query_url: str,
    campaign_id: str,
    token: str,
    *,
    workers: int,
    connections: int,
    seconds: int,
    rounds: int,
    cluster_url: str | None = None,
) -> list[Figure]:
    """The read-path figure; with `cluster_url` (a query API on the Redis Cluster, serving the
    same campaign), its rounds join the alternation and a second figure sets it beside the
    standalone query API."""
    path = f"/campaigns/{campaign_id}"
    knobs = {"workers": workers, "connections": connections, "seconds": seconds, "rounds": rounds}
    api_runs, bare_runs, cluster_runs, body = _against_bare(
        f"{query_url}{path}",
        path,
        {"Authorization": f"Bearer {token}"},
        on_cluster=f"{cluster_url}{path}" if cluster_url else None,
        **knobs,
    )
    figures = [
        _figure(
            "read_path",
            f"Query API GET /campaigns/{{id}} ({connections} conns)",
            "one campaign of the caller's",
            READ_GOAL,
            api_runs,
            bare_runs,
            body,
            **knobs,
        )
    ]
    if cluster_runs:
        standalone = max(api_runs, key=lambda r: r.requests_per_second)
        figures.append(_cluster_figure(cluster_runs, standalone, connections, seconds, rounds))
    return figures


LIST_QUERY = "/campaigns?status=active&sort=-created_at&limit=20"
LIST_GOAL = 0.5  # issue 21, item 3


def measure_list(
    query_url: str,
    token: str,
    *,
    campaigns: int,
    active: int,
    workers: int,
    connections: int,
    seconds: int,
    rounds: int,
) -> Figure:
    """The list query, by the bench's user (so the owner's index drives the page and the status
    is intersected with it, as for every user's list), over `campaigns` of theirs of which
    `active` are active."""
    knobs = {"workers": workers, "connections": connections, "seconds": seconds, "rounds": rounds}
    api_runs, bare_runs, _, body = _against_bare(
        f"{query_url}{LIST_QUERY}", LIST_QUERY, {"Authorization": f"Bearer {token}"}, **knobs
    )
    return _figure(
        "read_list",
        f"Query API GET {LIST_QUERY} ({connections} conns)",
        f"a user's page of 20 of their {active} active campaigns among {campaigns} (the rest drafts)",
        LIST_GOAL,
        api_runs,
        bare_runs,
        body,
        **knobs,
        campaigns=campaigns,
        active=active,
    )


def _cluster_figure(
    cluster_runs: list[WrkResult], standalone: WrkResult, connections: int, seconds: int, rounds: int
) -> Figure:
    best = max(cluster_runs, key=lambda r: r.requests_per_second)
    ratio = best.requests_per_second / standalone.requests_per_second
    return Figure(
        key="read_cluster",
        title=f"Query API GET /campaigns/{{id}} on Redis Cluster vs standalone ({connections} conns)",
        measured=f"{best.requests_per_second:,.0f} req/s, p50 {best.p50_ms:.2f} ms, p99 {best.p99_ms:.2f} ms",
        limit=(
            f"{standalone.requests_per_second:,.0f} req/s, p50 {standalone.p50_ms:.2f} ms, "
            f"p99 {standalone.p99_ms:.2f} ms (standalone)"
        ),
        ratio=round(ratio, 3),
        goal="—",
        met=None,
        how=(
            "the read-path figure's wrk rounds against a second query API (same workers) on the Redis "
            "Cluster, its campaigns projection rebuilt there from the bench's topics by the replay "
            f"tool; {rounds} rounds of {seconds} s alternating with the bare app's and the standalone "
            "query API's, best round kept; ratio: cluster / standalone"
        ),
        data={"query_api_cluster": [asdict(r) for r in cluster_runs]},
    )
