"""Exponential backoff: a failing step is tried again, then given up to the dead-letter topic."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


class PermanentFailure(Exception):
    """Trying again cannot help (a refused recipient, a corrupt history): dead-letter at once."""


class AttemptsExhausted(Exception):
    """Every attempt failed; `last_error` is the final one."""

    def __init__(self, attempts: int, last_error: BaseException) -> None:
        super().__init__(f"gave up after {attempts} attempts: {type(last_error).__name__}: {last_error}")
        self.attempts = attempts
        self.last_error = last_error


@dataclass(frozen=True)
class Backoff:
    """`max_attempts` tries in all, waiting base, 2*base, 4*base ... seconds between them."""

    base_seconds: float
    max_attempts: int

    def delay_after(self, attempt: int) -> float:
        return self.base_seconds * 2.0 ** (attempt - 1)

    @property
    def total_delay_seconds(self) -> float:
        return sum(self.delay_after(n) for n in range(1, self.max_attempts))


async def retry_with_backoff(
    step: Callable[[], Awaitable[T]],
    backoff: Backoff,
    on_retry: Callable[[int, Exception], None] = lambda attempt, error: None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> T:
    """Run `step` until it succeeds; raise PermanentFailure as is, AttemptsExhausted when out of tries."""
    for attempt in range(1, backoff.max_attempts + 1):
        try:
            return await step()
        except PermanentFailure:
            raise
        except Exception as error:
            if attempt == backoff.max_attempts:
                raise AttemptsExhausted(attempt, error) from error
            on_retry(attempt, error)
            await sleep(backoff.delay_after(attempt))
    raise AssertionError("unreachable: max_attempts is at least 1")
