"""Fixtures: the real local stack, and settings that isolate each test on it."""

from __future__ import annotations

import faulthandler
import gc
import threading
import time
import types
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from service_runtime.settings import Settings
from tests.support.private_cluster import release_private_cluster
from tests.support.private_stack import release_private_stack
from tests.support.stack import create_topics, ensure_stack_up, isolated_settings, remove_test_data

HERE = Path(__file__).parent


# The folders whose tests share the session's private stack (tests/support/private_stack.py).
PRIVATE_STACK_FOLDERS = ("security", "chaos", "load")


def _on_private_stack(item: pytest.Item) -> bool:
    path = Path(str(item.fspath))
    return any(HERE / folder in path.parents for folder in PRIVATE_STACK_FOLDERS)


# First among the hooks: pytest-xdist's worker reads the `xdist_group` marks in its own
# `pytest_collection_modifyitems`, so they must be on the items before it runs.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        path = Path(str(item.fspath))
        if HERE / "integration" in path.parents:
            item.add_marker(pytest.mark.integration)
        if HERE / "e2e" in path.parents:
            item.add_marker(pytest.mark.e2e)
        if _on_private_stack(item):
            # Under pytest-xdist (`make test`), one worker runs them all: one private stack, and
            # each security module's services started once.
            item.add_marker(pytest.mark.xdist_group("private-stack"))
    # The private-stack tests first (a stable sort: the rest keep their order): under xdist
    # their group, the longest unit of work, starts at once on one worker while the other
    # worker takes the rest, instead of starting last and running alone.
    items.sort(key=lambda item: not _on_private_stack(item))


# The private stack and the private cluster are stopped once the last test that uses them has
# run (its reruns included), not at the end of the session: idle, their servers still cost CPU
# the rest of the suite needs (the three Kafka nodes of the cluster about 0.2 of a core). A test
# that asks for one after that (run out of order) starts it again: the fixtures are per module.
_RELEASE = {"private_stack": release_private_stack, "private_cluster": release_private_cluster}
_LAST_USER: dict[str, str] = {}


def pytest_collection_finish(session: pytest.Session) -> None:
    """The last test to run that uses each, once `-m` and `-k` have deselected theirs."""
    _LAST_USER.clear()
    for item in session.items:
        for fixture in _RELEASE:
            if fixture in item.fixturenames:
                _LAST_USER[fixture] = item.nodeid


def pytest_runtest_logfinish(nodeid: str) -> None:
    for fixture, last in _LAST_USER.items():
        if nodeid == last:
            _RELEASE[fixture]()


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Whatever is still up at the end: a run stopped early, a last user that never ran."""
    for release in _RELEASE.values():
        release()


# A teardown still running after this long is stuck (the projectors' stop is bounded at 30 s):
# what every thread and every pending asyncio task is doing then goes to STUCK_LOG, read after
# a run (pytest-timeout fails the test at 300 s, and a rerun's report keeps no traceback).
STUCK_SECONDS = 90
STUCK_LOG = HERE.parent / ".local" / "logs" / "stuck-teardowns.log"


def _dump_stuck(nodeid: str) -> None:
    STUCK_LOG.parent.mkdir(parents=True, exist_ok=True)
    with STUCK_LOG.open("a") as out:
        out.write(f"\n=== {time.strftime('%FT%TZ', time.gmtime())} teardown of {nodeid} ")
        out.write(f"still running after {STUCK_SECONDS} s ===\n")
        faulthandler.dump_traceback(file=out, all_threads=True)
        out.flush()
        # Every suspended coroutine and async generator, each its own frame: a task's stack shows
        # only its outermost coroutine, and an `async for` step hides what it awaits.
        # `type()`, not isinstance: the heap holds weak proxies, which raise ReferenceError when
        # their object is gone (the first CI run with this watchdog lost the list that way).
        for thing in gc.get_objects():
            kind = type(thing)
            if kind is types.CoroutineType:
                frame = thing.cr_frame
            elif kind is types.AsyncGeneratorType:
                frame = thing.ag_frame
            else:
                continue
            if frame is not None:
                out.write(
                    f"  suspended {frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}\n"
                )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Iterator[None]:
    watchdog = threading.Timer(STUCK_SECONDS, _dump_stuck, args=(item.nodeid,))
    watchdog.daemon = True
    watchdog.start()
    try:
        return (yield)
    finally:
        watchdog.cancel()


@pytest.fixture(scope="session")
def stack() -> None:
    """The real servers, started if they are not running yet."""
    ensure_stack_up()


@pytest.fixture
async def settings(stack: None) -> AsyncIterator[Settings]:
    """Settings with this test's own MongoDB database, Redis prefix and Kafka topics."""
    settings = isolated_settings()
    await create_topics(settings)
    yield settings
    await remove_test_data(settings)


@pytest.fixture
def services(settings: Settings, tmp_path: Path):
    """Start service processes on this test's settings: `services.start([...]); services.wait_ready()`."""
    from tests.support.services import RunningServices, free_port

    isolated = settings.model_copy(
        update={
            "command_api_port": free_port(),
            "query_api_port": free_port(),
            "api_workers": 2,
        }
    )
    running = RunningServices(isolated, tmp_path)
    yield running
    running.stop_all()
