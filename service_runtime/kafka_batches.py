"""FastStream batch subscribers: headers that are not UTF-8 must not sink a batch, an event
that arrives after a quiet spell is consumed at once, and a handler's batch is passed on as it is
without a thread (`NoCast`).

FastStream's batch subscriber sleeps as long as its poll (`batch_timeout_ms`) after every poll
that brought nothing, so after a quiet spell the next event waited up to that long again before
it was even read (the tail of the freshness figure at low rates). `wake_at_once` drops that
pause: aiokafka's `getmany` already waits for the first record and returns as soon as one
arrives, so the poll length only sets how often an idle consumer wakes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable
from itertools import chain
from typing import Annotated, Any, TypeVar

from aiokafka import AIOKafkaConsumer, ConsumerRecord
from fast_depends.library import CustomField
from faststream.kafka.subscriber.usecase import BatchSubscriber

# A poll that returns empty this much sooner than its timeout is not a wait (a consumer being
# stopped or rebalanced): pause a little so the loop cannot spin.
SPIN_PAUSE_SECONDS = 0.01
_clock = time.monotonic
_pause = asyncio.sleep


class _NoCastField(CustomField):
    """faststream.params.NoCast's field (the argument passed on uncast), but with a coroutine
    `use`: fast_depends runs a custom field's plain `use` in anyio's thread pool, so FastStream's
    own cost a thread hop (a queue put, a wake-up, a call back into the loop) per message per
    subscriber, about a tenth of the projectors' CPU with the one-record batches of live traffic."""

    def __init__(self) -> None:
        super().__init__(cast=False)

    async def use(self, /, **kwargs: Any) -> dict[str, Any]:  # type: ignore[override]
        return kwargs


_Passed = TypeVar("_Passed")
# `records: NoCast[list[EventRecord]]`: the decoder's list, handed to the handler as it is.
NoCast = Annotated[_Passed, _NoCastField()]


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


async def first_record_headers(
    batch: tuple[ConsumerRecord[bytes, bytes], ...], original: Callable[..., Awaitable[Any]]
) -> Any:
    """`tolerant_headers` for a consumer whose decoder reads `raw_message` alone (the projectors):
    FastStream parses only the first record (the message's headers and correlation id, which its
    logs show), not every record's headers into `batch_headers` and values into `body`, which no
    one reads there (3.4% of the projector's CPU over 100,000 events, py-spy). `raw_message` is
    the whole batch, so an error still rewinds every partition of it (FastStream's nack)."""
    if len(batch) < 2:
        return await tolerant_headers(batch, original)
    message = await tolerant_headers(batch[:1], original)
    first, last = batch[0], batch[-1]
    message.raw_message = batch
    message.message_id = f"{first.offset}-{last.offset}-{first.timestamp}"
    return message


class _WakingBatchSubscriber(BatchSubscriber):
    """FastStream's batch subscriber without its pause after an empty poll."""

    __slots__ = ()

    async def get_msg(self, consumer: AIOKafkaConsumer) -> tuple[ConsumerRecord[Any, Any], ...]:
        started = _clock()
        messages = await consumer.getmany(timeout_ms=self.batch_timeout_ms, max_records=self.max_records)
        if not messages and _clock() - started < self.batch_timeout_ms / 2000:
            await _pause(SPIN_PAUSE_SECONDS)
        return tuple(chain(*messages.values()))


def wake_at_once(subscriber: Any) -> Any:
    """The same subscriber (FastStream's `BatchSubscriber`), consuming without the idle pause."""
    if type(subscriber) is not BatchSubscriber:
        raise TypeError(f"expected FastStream's BatchSubscriber, got {type(subscriber).__name__}")
    # Same slots, one method overridden: the instance keeps everything the broker registered.
    subscriber.__class__ = _WakingBatchSubscriber
    return subscriber
