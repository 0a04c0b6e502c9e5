"""The limit for the read path: a bare ASGI app answering the same JSON bytes, no framework."""

from __future__ import annotations

import os

from starlette.types import Receive, Scope, Send

BODY = os.environ.get("BENCH_BARE_BODY", '{"id":"x","version":1}').encode()
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})
