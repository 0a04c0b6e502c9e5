"""The JSON form of the values read models store, identical to the events' own wire form."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

import orjson
from pydantic import TypeAdapter

_DATETIME = TypeAdapter(datetime)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)


def json_time(moment: datetime) -> str:
    """A datetime as pydantic writes it in an envelope, so read models echo the event verbatim."""
    # The offset in the key: two datetimes of one instant in different zones are equal (and
    # hash alike), and each keeps its own form.
    return _json_time(moment, moment.utcoffset())


# Remembered: a projected event's time is written two or three times (created_at or updated_at,
# its notice), and pydantic's serializer is the dearer part of each.
@lru_cache(maxsize=1024)
def _json_time(moment: datetime, offset: timedelta | None) -> str:
    text: str = _DATETIME.dump_python(moment, mode="json")
    return text


def epoch_millis(moment: datetime) -> int:
    # Integer arithmetic: a float timestamp can round a millisecond the wrong way.
    return (moment - _EPOCH) // _MILLISECOND


def fragment(value: Any) -> bytes:
    """One JSON value as the bytes a document is assembled from."""
    return orjson.dumps(value)
