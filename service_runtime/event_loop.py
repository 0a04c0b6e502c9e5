"""The event loop the long-running services and the operator's tools run on.

uvloop by default, the loop uvicorn already gave the two APIs, so every service runs one loop;
back-to-back bench runs showed no difference from the standard loop that the host's noise could
resolve (bench/NOTES.md, session 13). `CAMPAIGNS_EVENT_LOOP=asyncio` runs the standard library's
loop instead (where uvloop is not installed, such as on Windows, that is what runs).
"""

from __future__ import annotations

import asyncio
import gc
import importlib.util
from collections.abc import Coroutine
from typing import Any, Literal, TypeVar

T = TypeVar("T")

EventLoop = Literal["uvloop", "asyncio"]


def loop_in_use(wanted: EventLoop) -> EventLoop:
    """The loop `run` will use for `wanted`: uvloop only where it is installed."""
    if wanted == "uvloop" and importlib.util.find_spec("uvloop") is not None:
        return "uvloop"
    return "asyncio"


def run(main: Coroutine[Any, Any, T], wanted: EventLoop) -> T:
    """`asyncio.run(main)` on the wanted loop."""
    if loop_in_use(wanted) == "uvloop":
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)


def settle_heap(young_threshold: int) -> None:
    """Once a service has imported what it runs: what exists now is kept out of the cyclic
    garbage collector's scans (`gc.freeze`: the modules, classes and functions, most of the
    heap, which live as long as the process), and with `young_threshold` > 0 a young collection
    runs after that many allocations rather than Python's 700. A projector allocates a few
    hundred objects an event and frees nearly all of them by reference counting; the collector
    was 5% of its CPU, most of it scanning objects that can never be garbage."""
    gc.freeze()
    if young_threshold > 0:
        _, middle, old = gc.get_threshold()
        gc.set_threshold(young_threshold, middle, old)
