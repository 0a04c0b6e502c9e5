"""The services' event loop: uvloop by default where it is installed, the standard one on request."""

from __future__ import annotations

import asyncio
import gc

import pytest

from service_runtime import event_loop
from service_runtime.settings import Settings


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_services_run_on_uvloop_by_default() -> None:
    assert Settings().event_loop == "uvloop"
    assert event_loop.run(_loop_module(), "uvloop").startswith("uvloop")


def test_the_standard_loop_on_request() -> None:
    assert event_loop.run(_loop_module(), "asyncio").startswith("asyncio")


def test_without_uvloop_the_standard_loop_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(event_loop.importlib.util, "find_spec", lambda name: None)
    assert event_loop.loop_in_use("uvloop") == "asyncio"
    assert event_loop.run(_loop_module(), "uvloop").startswith("asyncio")


def test_the_setting_refuses_an_unknown_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAMPAIGNS_EVENT_LOOP", "trio")
    with pytest.raises(ValueError, match="event_loop"):
        Settings()


def test_a_settled_heap_is_out_of_the_collectors_scans() -> None:
    threshold = gc.get_threshold()
    try:
        event_loop.settle_heap(5_000)
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (5_000, *threshold[1:])
        gc.unfreeze()
        event_loop.settle_heap(0)  # Python's own threshold kept
        assert gc.get_threshold()[0] == 5_000
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
