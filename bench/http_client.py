"""A small keep-alive HTTP/1.1 client for the freshness run: light enough to leave the CPU to the
servers (httpx took 0.6 of a core for 200 requests/s on this two-core machine).

It speaks exactly what the bench needs: a request with a JSON body or none, an answer with a
Content-Length (what uvicorn sends for these routes), connections kept open and reused.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from urllib.parse import urlsplit

import orjson


class ConnectionFailed(Exception):
    """The connection closed or broke before a whole answer arrived."""


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes

    def json(self) -> object:
        return orjson.loads(self.body)


class KeepAliveClient:
    def __init__(self, base_url: str, connections: int, headers: dict[str, str]) -> None:
        parts = urlsplit(base_url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.headers = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        # Last in, first out: at a low rate the same few connections stay warm.
        self._idle: asyncio.LifoQueue[tuple[asyncio.StreamReader, asyncio.StreamWriter] | None] = (
            asyncio.LifoQueue()
        )
        for _ in range(connections):
            self._idle.put_nowait(None)  # a slot; connected on first use

    async def request(self, method: str, target: str, body: object | None = None) -> Answer:
        slot = await self._idle.get()
        reused = slot is not None
        try:
            if slot is None:
                slot = await asyncio.open_connection(self.host, self.port)
            try:
                answer = await self._exchange(slot, method, target, body)
            except (asyncio.IncompleteReadError, ConnectionResetError) as exc:
                if not reused or getattr(exc, "partial", b""):
                    raise
                # The server closed this kept-alive connection while it was idle (uvicorn does
                # after 5 s), before reading the request: send it again on a new connection.
                slot[1].close()
                slot = await asyncio.open_connection(self.host, self.port)
                answer = await self._exchange(slot, method, target, body)
        except (OSError, asyncio.IncompleteReadError, ConnectionFailed) as exc:
            if slot is not None:
                slot[1].close()
            self._idle.put_nowait(None)
            raise ConnectionFailed(str(exc) or type(exc).__name__) from exc
        self._idle.put_nowait(slot)
        return answer

    async def _exchange(
        self,
        connection: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        method: str,
        target: str,
        body: object | None,
    ) -> Answer:
        reader, writer = connection
        payload = b"" if body is None else orjson.dumps(body)
        head = f"{method} {target} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n{self.headers}"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
        writer.write(head.encode() + b"\r\n" + payload)
        status_line = await reader.readuntil(b"\r\n")
        status = int(status_line.split(b" ", 2)[1])
        length = None
        while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        if length is None:
            raise ConnectionFailed("an answer without Content-Length")
        return Answer(status, await reader.readexactly(length))

    async def close(self) -> None:
        while not self._idle.empty():
            slot = self._idle.get_nowait()
            if slot is not None:
                slot[1].close()
