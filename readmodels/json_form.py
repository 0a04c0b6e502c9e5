"""The JSON form of the values read models store, identical to the events' own wire form."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from pydantic import TypeAdapter

_DATETIME = TypeAdapter(datetime)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def json_time(moment: datetime) -> str:
    """A datetime as pydantic writes it in an envelope, so read models echo the event verbatim."""
    text: str = _DATETIME.dump_python(moment, mode="json")
    return text


def epoch_millis(moment: datetime) -> int:
    # Integer arithmetic: a float timestamp can round a millisecond the wrong way.
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def fragment(value: Any) -> bytes:
    """One JSON value as the bytes a document is assembled from."""
    return orjson.dumps(value)
