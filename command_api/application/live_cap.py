"""The owner's cap on live campaigns, without counting them on every create.

Counting an owner's live campaigns costs the database time in proportion to how many they have
(about 30 µs a campaign on the local MongoDB server, so 30 ms a create at the default cap of
1,000). The cap keeps, per owner, the last exact count and the creates this process made since,
and counts again only when that count is older than `recount_seconds` or when the tally reaches
the cap. So a refusal always rests on a fresh exact count, and an owner far from the cap is
counted at most once per `recount_seconds` per process.

What it gives up: creates made by *other* processes since the last count are unseen, so the cap
can be overshot by the owner's creates on the other workers within `recount_seconds` (bounded
by the per-user command rate), besides the in-flight creates the check outside the transaction
already lets through. Deletes and completions made here are not subtracted: the tally only ever
errs towards counting again.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from command_api.application.errors import TooManyLiveCampaigns


@dataclass
class _Tally:
    live: int
    created_since: int
    counted_at: float


class LiveCampaignCap:
    def __init__(
        self,
        limit: int,
        *,
        recount_seconds: float,
        tracked_owners: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self._recount_seconds = recount_seconds
        self._tracked_owners = tracked_owners
        self._clock = clock
        self._tallies: OrderedDict[str, _Tally] = OrderedDict()

    async def admit(self, owner_id: str, count: Callable[[int], Awaitable[int]]) -> None:
        """Raise TooManyLiveCampaigns when the owner is at the cap; `count(limit)` counts exactly."""
        tally = self._tallies.get(owner_id)
        now = self._clock()
        if tally is None or self._due(tally, now):
            tally = _Tally(await count(self.limit), 0, now)
            self._tallies[owner_id] = tally
            if len(self._tallies) > self._tracked_owners:
                self._tallies.popitem(last=False)
        self._tallies.move_to_end(owner_id)
        if tally.live + tally.created_since >= self.limit:
            raise TooManyLiveCampaigns(self.limit)

    def created(self, owner_id: str) -> None:
        tally = self._tallies.get(owner_id)
        if tally is not None:
            tally.created_since += 1

    def _due(self, tally: _Tally, now: float) -> bool:
        stale = now - tally.counted_at >= self._recount_seconds
        return stale or tally.live + tally.created_since >= self.limit
