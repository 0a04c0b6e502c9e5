"""When the outbox relay waits for the changes right behind a new one (`relay_linger_ms`).

Each Kafka transaction costs the relay and the broker about as much as its records (its
AddPartitionsToTxn and EndTxn requests, the commit markers, and the fetches they wake in every
consumer group), so under a steady flow it pays to let the change right behind a new one join
its transaction. A fixed wait would add itself to every event's freshness, the lone command of a
quiet hour's included. So the relay lingers only while changes keep coming: when the new change
arrived within one linger of the end of the relay's previous publish. A change after a quiet
spell goes at once; under a flow faster than one change per linger, transactions take two or
more changes each and each change waits at most one linger for the ones behind it.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class Linger:
    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self._clock = clock
        self._published_at: float | None = None

    def wait(self) -> float:
        """How long to wait, now that a new change arrived, before publishing it (0: at once)."""
        if not self.seconds or self._published_at is None:
            return 0.0
        return self.seconds if self._clock() - self._published_at < self.seconds else 0.0

    def published(self) -> None:
        """A publish from the stream just ended."""
        self._published_at = self._clock()
