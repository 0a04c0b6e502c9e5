"""Correlation ids: one made per request is a random UUID4 in hex; one given is sent back as given."""

from __future__ import annotations

import uuid
from typing import Any

from service_runtime.http import CORRELATION_IDS_AT_ONCE, HttpBasicsMiddleware, new_correlation_id
from service_runtime.logs import correlation_id
from service_runtime.settings import Settings


def test_made_ids_are_uuid4_hex_and_never_repeat_across_batches() -> None:
    made = [new_correlation_id() for _ in range(3 * CORRELATION_IDS_AT_ONCE + 5)]
    assert len(set(made)) == len(made)
    for made_id in made:
        parsed = uuid.UUID(hex=made_id)
        assert (parsed.hex, parsed.version, parsed.variant) == (made_id, 4, uuid.RFC_4122)


async def answer(headers: list[tuple[bytes, bytes]]) -> tuple[dict[bytes, bytes], str | None]:
    seen: list[str | None] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(correlation_id.get())
        await send({"type": "http.response.start", "status": 200, "headers": [(b"etag", b'"1"')]})
        await send({"type": "http.response.body", "body": b"{}"})

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    middleware = HttpBasicsMiddleware(app, settings=Settings(app_env="test"), service="t")
    scope = {"type": "http", "method": "GET", "path": "/x", "query_string": b"", "headers": headers}
    await middleware(scope, receive, send)
    return dict(sent[0]["headers"]), seen[0]


async def test_a_given_id_is_the_first_one_sent_back_as_the_logs_see_it() -> None:
    headers, logged = await answer([(b"x-correlation-id", b"c-1"), (b"x-correlation-id", b"c-2")])
    assert headers[b"x-correlation-id"] == b"c-1" and logged == "c-1"
    # Latin-1 bytes: the logs' str, sent back as that str encodes (UTF-8), as before.
    headers, logged = await answer([(b"x-correlation-id", b"caf\xe9")])
    assert logged == "café" and headers[b"x-correlation-id"] == "café".encode()


async def test_a_missing_or_oversized_id_is_replaced_and_the_security_headers_are_added() -> None:
    for given in ([], [(b"x-correlation-id", b"")], [(b"x-correlation-id", b"x" * 201)]):
        headers, logged = await answer(given)
        assert logged is not None and uuid.UUID(hex=logged).version == 4
        assert headers[b"x-correlation-id"] == logged.encode()
        assert headers[b"x-content-type-options"] == b"nosniff"
        assert b"cache-control" not in headers  # no credentials: nothing private
        assert headers[b"etag"] == b'"1"'
    headers, _ = await answer([(b"authorization", b"Bearer t")])
    assert headers[b"cache-control"] == b"no-store"
