"""The monitor end to end: every query API worker streams every event; metrics and correlation ids."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import orjson
import websockets
from websockets.exceptions import ConnectionClosed

from tests.e2e.monitor_session import create_campaigns, sign_in
from tests.support import loopback
from tests.support.services import RunningServices

ALL = ["command-api", "query-api", "relay", "projectors", "workers"]


def ws_url(services: RunningServices) -> str:
    return services.query_url.replace("http://", "ws://") + "/monitor/ws"


async def connect(services: RunningServices, token: str) -> tuple[Any, dict[str, Any]]:
    ws = await websockets.connect(ws_url(services))
    await ws.send(orjson.dumps({"type": "auth", "token": token}).decode())
    ready = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
    assert ready["type"] == "ready", ready
    return ws, ready


async def created_ids_seen(ws: Any, wanted: set[str], within: float = 30) -> set[str]:
    seen: set[str] = set()

    async def read() -> None:
        while not wanted <= seen:
            message = orjson.loads(await ws.recv())
            if message["type"] == "event" and message["event_type"] == "CampaignCreated":
                seen.add(message["aggregate_id"])

    await asyncio.wait_for(read(), within)
    return seen


async def test_clients_of_both_query_api_workers_each_receive_every_event(services: RunningServices) -> None:
    services.start(ALL)
    services.wait_ready()
    token = await sign_in(services)

    # Which worker accepts a connection is the kernel's choice: connect until both have clients.
    clients: list[tuple[Any, dict[str, Any]]] = []
    try:
        for _ in range(40):
            clients.append(await connect(services, token))
            workers = {ready["worker"] for _, ready in clients}
            if len(workers) == 2 and len(clients) >= 4:
                break
        assert len(workers) == 2, f"every connection went to {workers}"

        correlation = f"monitor-e2e-{uuid.uuid4().hex}"
        ids = set(await create_campaigns(services, token, ["North", "South", "East"], correlation))
        results = await asyncio.gather(*(created_ids_seen(ws, ids) for ws, _ in clients))
        assert all(seen == ids for seen in results)
    finally:
        for ws, _ in clients:
            await ws.close()

    # The request's X-Correlation-ID went through the events log, the relay's Kafka headers and
    # into the projectors' JSON log lines.
    async def logged() -> list[dict[str, Any]]:
        lines = (services.log_dir / "projectors.log").read_text(errors="replace").splitlines()
        entries = [orjson.loads(line) for line in lines if line.startswith("{")]
        return [e for e in entries if e.get("correlation_id") == correlation]

    entries: list[dict[str, Any]] = []
    # Both projections' lines: stats fetches in batches (batch_fetch_wait_ms), so its come later.
    wanted = {(projection, i) for projection in ("campaigns", "stats") for i in ids}
    for _ in range(50):
        entries = await logged()
        if {(e.get("projection"), e.get("aggregate_id")) for e in entries} >= wanted:
            break
        await asyncio.sleep(0.2)
    applied = [
        e for e in entries if e.get("outcome") == "applied" and e.get("event_type") == "CampaignCreated"
    ]
    assert {e["aggregate_id"] for e in applied} == ids
    assert {e["projection"] for e in applied} >= {"campaigns", "stats"}


async def test_non_admins_and_bad_tokens_are_refused_by_the_served_monitor(services: RunningServices) -> None:
    services.start(["command-api", "query-api", "projectors"])
    services.wait_ready()
    user = await sign_in(services, admin=False)
    for token, code in ((user, 4403), ("forged.token.value", 4401)):
        async with websockets.connect(ws_url(services)) as ws:
            await ws.send(orjson.dumps({"type": "auth", "token": token}).decode())
            try:
                while True:
                    await asyncio.wait_for(ws.recv(), 10)
            except ConnectionClosed as closed:
                assert closed.rcvd is not None and closed.rcvd.code == code


async def test_every_process_exposes_the_pipelines_metrics(services: RunningServices) -> None:
    services.start(ALL)
    services.wait_ready()
    token = await sign_in(services)
    await create_campaigns(services, token, ["Metered"])
    settings = services.settings
    host = settings.metrics_host
    # (metric, a label it must carry or None): each one has to show up on its process's endpoint.
    api = [("http_requests_total", 'route="/campaigns"'), ("http_request_duration_seconds_bucket", None)]
    expected: dict[str, list[tuple[str, str | None]]] = {
        f"http://{host}:{settings.command_api_metrics_port}/metrics": api,
        f"http://{host}:{settings.query_api_metrics_port}/metrics": [
            ("http_requests_total", 'route="/monitor"'),
            ("http_request_duration_seconds_bucket", None),
        ],
        f"http://{host}:{settings.relay_metrics_port}/metrics": [
            ("relay_events_published_total", 'aggregate_type="campaign"'),
            ("relay_backlog_events", None),
        ],
        f"http://{host}:{settings.projectors_metrics_port}/metrics": [
            ("projector_records_total", 'outcome="applied"'),
            ("projector_batch_seconds_bucket", None),
            ("consumer_group_lag_records", f'group="{settings.topic_prefix}projector.campaigns"'),
            ("dead_letter_records", None),
        ],
        f"http://{host}:{settings.workers_metrics_port}/metrics": [("worker_events_total", None)],
    }
    async with loopback.client(timeout=5) as client:
        # A query API request, so its route shows up in the metrics.
        await client.get(f"{services.query_url}/monitor")
        missing: dict[str, list[str]] = {}
        for _ in range(100):
            missing = {}
            for url, series in expected.items():
                text = (await client.get(url)).text
                absent = [name for name, label in series if not _exposes(text, name, label)]
                if absent:
                    missing[url] = absent
            if not missing:
                break
            await asyncio.sleep(0.2)
    assert not missing, missing


def _exposes(text: str, name: str, label: str | None) -> bool:
    return any(
        line.startswith((name + "{", name + " ")) and (label is None or label in line)
        for line in text.splitlines()
    )
