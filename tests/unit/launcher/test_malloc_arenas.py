"""`campaigns serve` caps glibc's malloc arenas for the service and what it execs, unless told."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.support.stack import REPO

SHOW = (
    "import os; from launcher.cli import _few_malloc_arenas; _few_malloc_arenas(); "
    "print(os.environ['MALLOC_ARENA_MAX'])"
)


def _arenas(env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-c", SHOW],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return done.stdout.strip()


def test_services_run_with_two_malloc_arenas_by_default() -> None:
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    assert _arenas(env) == "2"


def test_an_operator_value_of_malloc_arena_max_is_kept() -> None:
    assert _arenas({**os.environ, "MALLOC_ARENA_MAX": "4"}) == "4"
