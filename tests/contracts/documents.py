"""The published contracts as a default deployment serves them, and their checked-in snapshots.

`make snapshots` (`python -m tests.contracts.documents`) rewrites the snapshots; commit them with
the change that made them differ, so a contract changes only on purpose.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from events import Topics
from events.asyncapi import asyncapi_document
from service_runtime.settings import Settings

SNAPSHOTS = Path(__file__).parent / "snapshots"
NODE = Path(__file__).parent / "node"


def openapi_documents() -> dict[str, dict[str, Any]]:
    """Both APIs' `/openapi.json`, built from their apps (no server needed: lifespans don't run)."""
    from command_api.entrypoints.http.app import create_app as command_app
    from query_api.entrypoints.http.app import create_app as query_app

    settings = Settings()
    return {
        "command-api.openapi": command_app(settings).openapi(),
        "query-api.openapi": query_app(settings).openapi(),
    }


def published_documents() -> dict[str, dict[str, Any]]:
    """Every published contract by snapshot name."""
    return {**openapi_documents(), "events.asyncapi": asyncapi_document(Topics())}


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=False, ensure_ascii=False) + "\n"


def snapshot_path(name: str) -> Path:
    return SNAPSHOTS / f"{name}.json"


def write_snapshots() -> list[str]:
    """Rewrite every snapshot; the names of those that changed."""
    SNAPSHOTS.mkdir(exist_ok=True)
    changed = []
    for name, document in published_documents().items():
        path = snapshot_path(name)
        text = render(document)
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            changed.append(name)
    return changed


if __name__ == "__main__":
    changed = write_snapshots()
    print("snapshots rewritten: " + (", ".join(changed) if changed else "none changed"))
    sys.exit(0)
