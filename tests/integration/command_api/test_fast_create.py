"""The fast create (command_api/entrypoints/http/fast_commands.py) answers as FastAPI's route does.

Each request is sent twice, once with the fast create in place and once with it removed (every
request through FastAPI), and the two answers must be the same bytes, status and headers (a
created campaign's id aside). The test also counts which requests the fast create took itself,
so it fails if the fast path silently stops being used, or takes a request it should not.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from starlette.types import Receive, Scope, Send

from command_api.entrypoints.http.fast_commands import CampaignCreate
from service_runtime.http import metrics_text
from service_runtime.settings import Settings
from tests.integration.command_api.accounts import CAMPAIGN, Account, signed_up
from tests.integration.command_api.conftest import running_api

UUID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class Paths:
    """The API with a switch between its two paths, and a count of the requests handed on."""

    def __init__(self, runner: running_api, client: httpx.AsyncClient) -> None:
        self.app = runner.app
        self.client = client
        self.fast_create = self.app.fast_create
        basics: Any = self.fast_create
        self.create: CampaignCreate = basics.app
        self.handed_on = 0
        fallback = self.create.fallback

        async def counted(scope: Scope, receive: Receive, send: Send) -> None:
            self.handed_on += 1
            await fallback(scope, receive, send)

        self.create.fallback = counted

    async def both(self, content: bytes, headers: dict[str, str]) -> tuple[httpx.Response, httpx.Response]:
        self.app.fast_create = self.fast_create
        fast = await self.client.post("/campaigns", content=content, headers=headers)
        self.app.fast_create = None
        routed = await self.client.post("/campaigns", content=content, headers=headers)
        self.app.fast_create = self.fast_create
        return fast, routed


@pytest.fixture
async def paths(settings: Settings) -> AsyncIterator[Paths]:
    runner = running_api(settings)
    async with runner as client:
        yield Paths(runner, client)


def _answer(response: httpx.Response) -> tuple[int, bytes, list[tuple[str, str]]]:
    """Status, body and headers with generated ids and the correlation id blanked."""
    headers = [
        (name, UUID.sub(b"<id>", value.encode()).decode())
        for name, value in response.headers.multi_items()
        if name != "x-correlation-id"
    ]
    return response.status_code, UUID.sub(b"<id>", response.content), headers


def _json(headers: dict[str, str] | None = None, **more: str) -> dict[str, str]:
    return {"Content-Type": "application/json", **(headers or {}), **more}


async def test_the_fast_create_takes_ordinary_creates_and_answers_as_the_route_does(
    paths: Paths, settings: Settings
) -> None:
    owner: Account = await signed_up(paths.client)
    body = orjson.dumps(CAMPAIGN)
    cases: list[tuple[bytes, dict[str, str]]] = [
        (body, _json(owner.auth)),  # 201
        (body, _json(owner.auth, **{"Idempotency-Key": "k-1"})),  # 201, then the same answer again
        (body, _json(owner.auth, **{"Idempotency-Key": "k-1"})),
        (orjson.dumps({**CAMPAIGN, "name": "Other"}), _json(owner.auth, **{"Idempotency-Key": "k-1"})),  # 422
        (body, _json()),  # no token: 401
        (body, _json({"Authorization": "Bearer forged.token.here"})),  # 401
        (body, _json({"Authorization": "Basic " + owner.access_token})),  # not a bearer: 401
        (orjson.dumps({**CAMPAIGN, "ends_at": "2020-01-01T00:00:00Z"}), _json(owner.auth)),  # domain 422
        (orjson.dumps({**CAMPAIGN, "budget": {"amount": "1", "currency": "XXX"}}), _json(owner.auth)),
    ]
    for content, headers in cases:
        fast, routed = await paths.both(content, headers)
        assert _answer(fast) == _answer(routed), (content, headers, fast.text, routed.text)
    assert paths.handed_on == 0  # every one of them answered by the fast create itself
    statuses = [(await paths.both(c, h))[0].status_code for c, h in cases[:1]]
    assert statuses == [201]
    assert 'method="POST",route="/campaigns",service="command-api",status="201"' in metrics_text().decode()


async def test_unusual_creates_are_handed_to_fastapi_and_answered_as_before(paths: Paths) -> None:
    owner: Account = await signed_up(paths.client)
    body = orjson.dumps(CAMPAIGN)
    unusual: list[tuple[bytes, dict[str, str]]] = [
        (orjson.dumps({**CAMPAIGN, "owner_id": "someone"}), _json(owner.auth)),  # unknown field
        (orjson.dumps({k: v for k, v in CAMPAIGN.items() if k != "name"}), _json(owner.auth)),
        (orjson.dumps({**CAMPAIGN, "channel": "fax"}), _json(owner.auth)),
        (orjson.dumps({**CAMPAIGN, "name": "x" * 500}), _json()),  # invalid body and no token: 401
        (b'{"name": ', _json(owner.auth)),  # malformed JSON: 422
        (b"", _json(owner.auth)),
        (b"[1, 2]", _json(owner.auth)),
        (b'{"name": NaN}', _json(owner.auth)),  # JSON orjson refuses, Python's reads
        (body, _json(owner.auth, **{"Idempotency-Key": "k" * 201})),  # 422 naming the header
        (body, {**owner.auth, "Content-Type": "text/plain"}),
        (body, {**owner.auth, "Content-Type": "application/merge-patch+json"}),
        (body, {**owner.auth, "Content-Type": "application/json; charset=utf-8"}),
        (body, _json(owner.auth, Origin="https://elsewhere.example")),
    ]
    for content, headers in unusual:
        before = paths.handed_on
        fast, routed = await paths.both(content, headers)
        assert paths.handed_on == before + 1, (content, headers)
        assert _answer(fast) == _answer(routed), (content, headers, fast.text, routed.text)
    refused = await paths.client.post(
        "/campaigns", content=orjson.dumps({**CAMPAIGN, "owner_id": "x"}), headers=_json(owner.auth)
    )
    assert refused.status_code == 422
    assert refused.headers["content-type"] == "application/problem+json"
    assert {e["field"] for e in refused.json()["errors"]} == {"owner_id"}


async def test_a_handed_on_create_is_wrapped_in_the_http_basics_once(paths: Paths) -> None:
    owner: Account = await signed_up(paths.client)
    headers = {**owner.auth, "Content-Type": "text/plain", "X-Correlation-ID": "c-fast-1"}
    response = await paths.client.post("/campaigns", content=orjson.dumps(CAMPAIGN), headers=headers)
    assert paths.handed_on == 1
    assert response.headers.get_list("x-correlation-id") == ["c-fast-1"]
    assert response.headers.get_list("x-content-type-options") == ["nosniff"]
    assert response.headers.get_list("cache-control") == ["no-store"]
