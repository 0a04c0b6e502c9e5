"""Campaign read models kept in the worker's memory, dropped when the projector announces a change.

A hit answers `GET /campaigns/{id}` without a Redis round trip (the benchmarked read path).
Why an entry is never served stale for longer than `ttl_seconds`, and normally not at all:

- Every applied event is PUBLISHed by the projector from inside the atomic script that applied
  it (`readmodels/lua/cas.lua`, after the writes it announces); the notification
  listener calls `invalidate` for its aggregate, before it wakes `min_version` waiters, so a
  woken waiter reads Redis again.
- A read that misses notes the `ticket` before asking Redis and is kept only if nothing was
  invalidated meanwhile: a reply computed before an event was applied can arrive after that
  event's announcement (pub/sub and reads use two connections), and must not be kept.
- Entries are kept only while the events feed is subscribed (`feed_up` / `feed_down`):
  messages published while it is down are lost, so it is emptied both ways.
- Entries belong to one generation (base): a replay swap, seen through the generation pointer,
  empties the cache; for `settle_seconds` after it nothing is kept, because the replay's final
  pass writes the new generation unannounced (projectors/replay/application/rebuild.py). The
  settling counts from when the process saw the swap (`generation_seen`, called by the
  generation cache as it learns the new pointer), not from the first read after it: a worker
  that served nothing across a swap must not stop keeping for `settle_seconds` at its next
  read, long after the final pass ended.
- `ttl_seconds` bounds whatever the above cannot see (a feed that dies silently).

Memory is bounded by `max_bytes` (documents plus an estimate of each entry's overhead);
the oldest entries go first. Unknown ids are not kept, so probing ids costs no memory.

Pages of `GET /campaigns` (the response's JSON) are kept beside the documents (`get_page` /
`put_page`, bounded by `page_max_bytes`), under the same rules, except that an announcement of
a campaign drops every page that may hold any campaign of its owner (one created, one whose
status or sort value moved): that owner's pages and the admins' (who see every campaign). A
campaign announcement that names no owner drops every page; a user's drops none (no page shows
users). Keyed by the whole question (the query string and whose campaigns the caller may see:
a user id, or None for an admin), a kept page is what the same reads of Redis would give, until
the next announcement that could change it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from readmodels.snapshot import Snapshot

# A page of campaigns: the response's JSON.
Page = bytes
# What a page answers: the query string, and whose campaigns the caller sees (None: an admin's,
# every campaign).
PageQuestion = tuple[bytes, str | None]

# Per-entry cost beyond the document (measured with tracemalloc): dict slot, key and owner
# strings, Snapshot, tuple and float objects.
ENTRY_OVERHEAD_BYTES = 450


class CampaignCache:
    def __init__(
        self,
        max_bytes: int,
        ttl_seconds: float,
        settle_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        page_max_bytes: int = 0,
    ) -> None:
        self.max_bytes = max_bytes
        self.page_max_bytes = page_max_bytes
        self.ttl = ttl_seconds
        self.settle = settle_seconds
        self.clock = clock
        # id -> (snapshot, expires at, cost), oldest first.
        self._entries: dict[str, tuple[Snapshot, float, int]] = {}
        self._bytes = 0
        # page question -> (page, expires at, cost), oldest first.
        self._pages: dict[PageQuestion, tuple[Page, float, int]] = {}
        # whose campaigns (None: all) -> the questions kept of that viewer, as a set.
        self._viewers: dict[str | None, dict[PageQuestion, None]] = {}
        self._page_bytes = 0
        self._base: str | None = None
        self._keep_after = 0.0
        self._epoch = 0  # bumped by every invalidation: a read begun before one is not kept
        self._feed_up = False

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    @property
    def pages(self) -> int:
        return len(self._pages)

    @property
    def page_bytes(self) -> int:
        return self._page_bytes

    def get(self, base: str, campaign_id: str) -> Snapshot | None:
        if base != self._base:
            self._switch(base)
            return None
        entry = self._entries.get(campaign_id)
        if entry is None:
            return None
        if self.clock() >= entry[1]:
            self._drop(campaign_id)
            return None
        return entry[0]

    def get_page(self, base: str, question: PageQuestion) -> Page | None:
        if base != self._base:
            self._switch(base)
            return None
        entry = self._pages.get(question)
        if entry is None:
            return None
        if self.clock() >= entry[1]:
            self._drop_page(question)
            return None
        return entry[0]

    def put_page(
        self, base: str, question: PageQuestion, page: Page, ticket: int, question_bytes: int
    ) -> None:
        """Keep `page` (read from Redis after `ticket`) unless anything was announced since."""
        if ticket != self._epoch or not self._feed_up or base != self._base or self.page_max_bytes <= 0:
            return
        now = self.clock()
        if now < self._keep_after:
            return
        cost = len(page) + question_bytes + ENTRY_OVERHEAD_BYTES
        if cost > self.page_max_bytes:
            return
        self._drop_page(question)
        while self._pages and self._page_bytes + cost > self.page_max_bytes:
            self._drop_page(next(iter(self._pages)))
        self._pages[question] = (page, now + self.ttl, cost)
        self._viewers.setdefault(question[1], {})[question] = None
        self._page_bytes += cost

    def generation_seen(self, base: str) -> None:
        """The live generation is now `base`, learnt just now (the generation cache's refresh):
        a swap empties the cache and starts the settling at once, whether or not a read follows."""
        if base != self._base:
            self._switch(base)

    def ticket(self) -> int:
        """Taken before a read from Redis; `put` keeps its answer only if nothing changed since."""
        return self._epoch

    def put(self, base: str, campaign_id: str, snapshot: Snapshot, ticket: int) -> None:
        if (
            ticket != self._epoch
            or not self._feed_up
            or base != self._base
            or snapshot.version == 0
            or self.max_bytes <= 0
        ):
            return
        now = self.clock()
        if now < self._keep_after:
            return
        cost = len(snapshot.doc or b"") + len(campaign_id) + ENTRY_OVERHEAD_BYTES
        if cost > self.max_bytes:
            return
        self._drop(campaign_id)
        while self._entries and self._bytes + cost > self.max_bytes:
            self._drop(next(iter(self._entries)))
        self._entries[campaign_id] = (snapshot, now + self.ttl, cost)
        self._bytes += cost

    def invalidate(self, aggregate_id: str, owner: str | None = None, lists: bool = True) -> None:
        """An event of `aggregate_id` was applied (any aggregate type: ids do not collide).
        `owner`: the campaign's owner, when the announcement names it: only its owner's and the
        admins' pages go; else every page, unless `lists` is False (no page shows the aggregate)."""
        self._epoch += 1
        self._drop(aggregate_id)
        if not self._pages or not lists:
            return
        if owner is None:
            self._clear_pages()
            return
        for viewer in (owner, None):
            for question in list(self._viewers.get(viewer, ())):
                self._drop_page(question)

    def clear(self) -> None:
        self._epoch += 1
        self._entries.clear()
        self._bytes = 0
        self._clear_pages()

    def feed_up(self) -> None:
        """The events feed is subscribed: from now on every change is announced to us."""
        self.clear()
        self._feed_up = True

    def feed_down(self) -> None:
        """The events feed is lost: announcements may be missed, so keep nothing until it is back."""
        self._feed_up = False
        self.clear()

    def _switch(self, base: str) -> None:
        if self._base is not None:
            # A swap: the new generation may still change unannounced for a moment.
            self._keep_after = self.clock() + self.settle
        self._base = base
        self.clear()

    def _drop(self, campaign_id: str) -> None:
        entry = self._entries.pop(campaign_id, None)
        if entry is not None:
            self._bytes -= entry[2]

    def _drop_page(self, question: PageQuestion) -> None:
        entry = self._pages.pop(question, None)
        if entry is not None:
            self._page_bytes -= entry[2]
            kept = self._viewers.get(question[1])
            if kept is not None:
                kept.pop(question, None)
                if not kept:
                    del self._viewers[question[1]]

    def _clear_pages(self) -> None:
        self._pages.clear()
        self._viewers.clear()
        self._page_bytes = 0
