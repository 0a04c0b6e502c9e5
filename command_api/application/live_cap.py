"""The owner's cap on live campaigns, without counting them on every create.

Counting an owner's live campaigns costs the database time in proportion to how many they have
(about 30 µs a campaign on the local MongoDB server: 30 ms at the default cap of 1,000, a
second for an owner with 30,000). The cap keeps, per owner and per process, the last exact
count and the creates this process made since, and counts again only when it must:

- never while the owner cannot have reached the cap since the count: every create anywhere goes
  through the per-user command rate (a token bucket in Redis, shared by every process), so at
  most `burst + rate * age` creates were made elsewhere since the count;
- when that bound could reach the cap, once the count is `recount_seconds` old;
- always once the tally itself reaches the cap, so a refusal rests on a fresh exact count.

One count per owner is in flight at a time; concurrent creates wait for it instead of each
sending their own (a slow count would otherwise be sent again by every request behind it).

What it gives up, near the cap only: creates made by other processes within `recount_seconds`
are unseen, so the cap can be overshot by them (bounded by the command rate), besides the
in-flight creates the check outside the transaction already lets through. Deletes and
completions are not subtracted: the tally only ever errs towards counting again.
"""

from __future__ import annotations

import asyncio
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
        rate_per_second: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self._recount_seconds = recount_seconds
        self._tracked_owners = tracked_owners
        self._rate_per_second = rate_per_second
        self._burst = burst
        self._clock = clock
        self._tallies: OrderedDict[str, _Tally] = OrderedDict()
        self._counting: dict[str, asyncio.Future[_Tally]] = {}

    async def admit(self, owner_id: str, count: Callable[[int], Awaitable[int]]) -> None:
        """Raise TooManyLiveCampaigns when the owner is at the cap; `count(limit)` counts exactly."""
        tally = self._tallies.get(owner_id)
        if tally is None or self._must_count(tally, self._clock()):
            tally = await self._count(owner_id, count)
        if tally.live + tally.created_since >= self.limit:
            raise TooManyLiveCampaigns(self.limit)

    def created(self, owner_id: str) -> None:
        tally = self._tallies.get(owner_id)
        if tally is not None:
            tally.created_since += 1

    def _must_count(self, tally: _Tally, now: float) -> bool:
        seen = tally.live + tally.created_since
        if seen >= self.limit:
            return True
        age = now - tally.counted_at
        unseen_at_most = self._burst + self._rate_per_second * age
        if seen + unseen_at_most < self.limit:
            return False
        return age >= self._recount_seconds

    async def _count(self, owner_id: str, count: Callable[[int], Awaitable[int]]) -> _Tally:
        while (running := self._counting.get(owner_id)) is not None:
            try:
                return await asyncio.shield(running)
            except asyncio.CancelledError:
                if not running.cancelled():
                    raise  # this request was cancelled, not the count it waited for
                # The request that was counting went away (its client left): count here.
        future: asyncio.Future[_Tally] = asyncio.get_running_loop().create_future()
        self._counting[owner_id] = future
        try:
            started = self._clock()
            tally = _Tally(await count(self.limit), 0, started)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as error:
            future.set_exception(error)
            future.exception()  # retrieved here, so an unawaited failure is not logged; waiters get it
            raise
        finally:
            del self._counting[owner_id]
        future.set_result(tally)
        self._tallies[owner_id] = tally
        self._tallies.move_to_end(owner_id)
        if len(self._tallies) > self._tracked_owners:
            self._tallies.popitem(last=False)
        return tally
