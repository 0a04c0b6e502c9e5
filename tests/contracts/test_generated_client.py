"""A client generated from the served OpenAPI by `openapi-python-client` parses every answer it gets.

The generator runs on the running command API's `/openapi.json`; the generated package is imported
from the test's tmp dir and used against that API: its problem objects come back for 412, 422 and
428, as the document declares.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from tests.support import loopback
from tests.support.services import RunningServices

pytestmark = pytest.mark.e2e

PACKAGE = "campaigns_command_client"
PASSWORD = "correct horse battery 9"


def _generate(document: bytes, tmp_path: Path) -> ModuleType:
    spec = tmp_path / "openapi.json"
    spec.write_bytes(document)
    config = tmp_path / "generator.yaml"
    config.write_text("post_hooks: []\n")  # no formatter run on the generated code
    generator = Path(sys.executable).with_name("openapi-python-client")
    generated = subprocess.run(
        [
            str(generator),
            "generate",
            *("--path", str(spec), "--meta", "none"),
            *("--output-path", str(tmp_path / PACKAGE), "--config", str(config)),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = generated.stdout + generated.stderr
    assert generated.returncode == 0, output
    assert "Cannot parse response" not in output, output
    assert "Warning" not in output, output
    sys.path.insert(0, str(tmp_path))
    return importlib.import_module(PACKAGE)


def _operation(name: str, prefix: str) -> Any:
    folder = Path(sys.modules[PACKAGE].__file__ or "").parent / "api" / name
    module = next(p.stem for p in folder.glob(f"{prefix}*.py"))
    return importlib.import_module(f"{PACKAGE}.api.{name}.{module}")


def _drop_if_match(request: httpx.Request) -> None:
    del request.headers["If-Match"]


def test_generated_client_gets_problem_objects_for_412_422_and_428(
    services: RunningServices, tmp_path: Path
) -> None:
    services.start(["command-api"])
    services.wait_ready()
    document = loopback.get(f"{services.command_url}/openapi.json", timeout=10).content
    try:
        client_package = _generate(document, tmp_path)
        models = importlib.import_module(f"{PACKAGE}.models")
        register = _operation("auth", "register")
        login = _operation("auth", "login")
        create = _operation("campaigns", "create_campaign")
        patch = _operation("campaigns", "update_campaign")

        anonymous = client_package.Client(base_url=services.command_url)
        registered = register.sync_detailed(
            client=anonymous,
            body=models.RegisterRequest(email="gen@example.com", password=PASSWORD, name="Gen"),
        )
        assert registered.status_code == 201, registered.content
        tokens = login.sync(
            client=anonymous, body=models.LoginRequest(email="gen@example.com", password=PASSWORD)
        )
        assert isinstance(tokens, models.TokenPair)

        client = client_package.AuthenticatedClient(base_url=services.command_url, token=tokens.access_token)
        created = create.sync_detailed(
            client=client,
            body=models.CampaignCreateRequest.from_dict(
                {
                    "name": "Generated",
                    "channel": "email",
                    "budget": {"amount": "10.00", "currency": "EUR"},
                    "starts_at": "2027-03-01T00:00:00Z",
                    "ends_at": "2027-03-31T00:00:00Z",
                }
            ),
        )
        assert created.status_code == 201 and isinstance(created.parsed, models.CommandAccepted)
        assert created.headers["location"] == f"/campaigns/{created.parsed.id}"
        campaign_id = created.parsed.id
        rename = models.CampaignPatchRequest.from_dict({"name": "Renamed"})

        changed = patch.sync_detailed(campaign_id, client=client, body=rename, if_match='"1"')
        assert changed.status_code == 200 and isinstance(changed.parsed, models.CommandAccepted)
        assert changed.headers["etag"] == '"2"'

        stale = patch.sync_detailed(campaign_id, client=client, body=rename, if_match='"1"')
        assert stale.status_code == 412
        assert isinstance(stale.parsed, models.ProblemDetails) and stale.parsed.status == 412

        invalid = patch.sync_detailed(
            campaign_id,
            client=client,
            body=models.CampaignPatchRequest.from_dict({"name": ""}),
            if_match='"2"',
        )
        assert invalid.status_code == 422
        assert isinstance(invalid.parsed, models.ProblemDetails)
        assert [e.field for e in invalid.parsed.errors] == ["name"]

        without = client_package.AuthenticatedClient(
            base_url=services.command_url,
            token=tokens.access_token,
            httpx_args={"event_hooks": {"request": [_drop_if_match]}},
        )
        missing = patch.sync_detailed(campaign_id, client=without, body=rename, if_match='"2"')
        assert missing.status_code == 428
        assert isinstance(missing.parsed, models.ProblemDetails) and missing.parsed.status == 428
    finally:
        if str(tmp_path) in sys.path:
            sys.path.remove(str(tmp_path))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(f"{PACKAGE}.")]:
            del sys.modules[name]
