"""The import rules between packages hold (README "Where things live"; contracts in pyproject.toml)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.stack import REPO

SERVICES = ("command_api", "query_api", "projectors", "workers")


def test_the_import_contracts_hold() -> None:
    lint_imports = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(lint_imports), "--no-cache"], cwd=REPO, capture_output=True, text=True, check=False, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_the_launcher_imports_no_service_until_a_command_runs_it() -> None:
    probe = (
        "import sys, launcher.cli; "
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({SERVICES!r})))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"
