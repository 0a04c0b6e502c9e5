"""The replay's seen versions in a spill file, so its memory does not grow with the log.

A private, temporary SQLite database (an empty file name: SQLite creates it on disk and deletes
it when the connection closes), one row per aggregate, looked up and raised a batch at a time.
Its page cache is the only memory it holds (`cache_kib`); a million aggregates take about 60 MB
of disk. Lookups take the batch's distinct ids at once, so a batch of a thousand events costs
two statements, not a thousand.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from projectors.replay.domain.seen_versions import Mark, newer_in_order

# Ids per SELECT ... IN (...): under SQLite's older 999-parameter limit.
LOOKUP_CHUNK = 900
CACHE_KIB = 4096


class SpilledSeenVersions:
    def __init__(self, cache_kib: int = CACHE_KIB) -> None:
        self._db = sqlite3.connect("", isolation_level=None, check_same_thread=False)
        self._db.execute(f"PRAGMA cache_size = -{int(cache_kib)}")
        self._db.execute("PRAGMA journal_mode = OFF")
        self._db.execute("PRAGMA synchronous = OFF")
        self._db.execute("CREATE TABLE seen (id TEXT PRIMARY KEY, v INTEGER NOT NULL) WITHOUT ROWID")

    def __len__(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM seen").fetchone()[0])

    def keep_newer(self, marks: Sequence[Mark]) -> list[bool]:
        if not marks:
            return []
        verdicts, raised = newer_in_order(marks, self._known({aggregate_id for aggregate_id, _ in marks}))
        if raised:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT INTO seen (id, v) VALUES (?, ?) ON CONFLICT (id) DO UPDATE SET v = excluded.v",
                raised.items(),
            )
            self._db.execute("COMMIT")
        return verdicts

    def last(self, aggregate_id: str) -> int:
        return self._known({aggregate_id}).get(aggregate_id, 0)

    def close(self) -> None:
        self._db.close()

    def _known(self, ids: set[str]) -> dict[str, int]:
        listed = list(ids)
        found: dict[str, int] = {}
        for start in range(0, len(listed), LOOKUP_CHUNK):
            chunk = listed[start : start + LOOKUP_CHUNK]
            marks = ",".join("?" * len(chunk))
            found.update(self._db.execute(f"SELECT id, v FROM seen WHERE id IN ({marks})", chunk))  # noqa: S608
        return found
