"""FastStream batch subscribers' shared parser: headers that are not UTF-8 must not sink a batch."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import ConsumerRecord


async def tolerant_headers(
    batch: tuple[ConsumerRecord[bytes, bytes], ...], original: Callable[..., Awaitable[Any]]
) -> Any:
    """FastStream decodes every header as UTF-8; one bad header must not sink a whole batch."""
    try:
        return await original(batch)
    except UnicodeDecodeError:
        cleaned = tuple(
            dataclasses.replace(
                r, headers=[(k, v.decode("utf-8", "replace").encode()) for k, v in (r.headers or ())]
            )
            for r in batch
        )
        return await original(cleaned)
