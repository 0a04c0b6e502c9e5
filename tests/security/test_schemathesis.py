"""Generated requests against both running APIs' OpenAPI documents (schemathesis).

Each operation gets valid and invalid requests generated from its schema, sent with a real
admin's bearer token so the authorised paths run. Every answer must be a non-5xx that matches
what the document declares (status, content type, headers, body schema), and invalid input
must be refused. At least 1,000 cases run against each API.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.security.accounts import create_campaign, sign_up_admin
from tests.security.conftest import System
from tests.support import loopback

pytestmark = pytest.mark.security

MIN_CASES = int(os.environ.get("CAMPAIGNS_FUZZ_MIN_CASES", "1000"))
# Operations whose inputs can take many values get most of the examples; hypothesis stops
# early on an operation that has only a few distinct requests (GET /health/live).
EXAMPLES = {
    "command": {GenerationMode.POSITIVE: 90, GenerationMode.NEGATIVE: 60},
    "query": {GenerationMode.POSITIVE: 150, GenerationMode.NEGATIVE: 100},
}
# min_version cases mostly name versions never reached: keep each bounded wait short. Logins
# with generated credentials would throttle every login from this address (tested elsewhere).
SETTINGS = {
    "read_wait_seconds": 0.005,
    "login_address_max_failures": 100_000,
    "login_account_max_guesses": 100_000,
}
# Invalid input may be refused with any of these; 412 and 428 too, because a precondition
# (If-Match) is judged before the body is read (RFC 9110, 13.2.1).
REFUSALS = ["400", "401", "403", "404", "405", "406", "409", "412", "413", "415", "422", "428", "429"]
CONFIG = SchemathesisConfig.from_dict(
    {"checks": {"negative_data_rejection": {"expected-statuses": REFUSALS}}}
)
# Schema-valid is not always valid: the domain has rules JSON Schema cannot state (distinct
# characters and no common passwords, ends_at after starts_at, ISO 4217 currencies), answered
# with the documented 422 problem. Everything else schemathesis checks stays on.
EXCLUDED = [positive_data_acceptance, not_a_server_error]


def no_server_error(ctx: Any, response: Any, case: Any) -> bool | None:
    """Any 5xx fails, except the documented 503 of a bounded `min_version` wait that ran out
    (the read model has not reached that version, real or made up; the client may retry)."""
    if response.status_code < 500:
        return None
    waited = "min_version" in (case.query or {}) and "has not reached version" in response.text
    if response.status_code == 503 and waited and response.headers.get("retry-after"):
        return None
    raise AssertionError(f"{case.operation.label} answered {response.status_code}: {response.text[:300]}")


def run_operations(
    schema: Any, api: str, base_url: str, headers: dict[str, str], seen: Callable[[str], None]
) -> None:
    session = requests.Session()
    failures: list[str] = []

    def call(case: Any) -> None:
        seen(case.operation.label)
        case.call_and_validate(
            base_url=base_url,
            headers=headers,
            session=session,
            excluded_checks=EXCLUDED,
            additional_checks=[no_server_error],
        )

    for result in schema.get_all_operations():
        operation = result.ok()
        for mode, examples in EXAMPLES[api].items():
            if mode is GenerationMode.NEGATIVE and not _has_inputs(operation):
                continue
            try:
                cases(operation, mode, examples, headers, call)()
            except Unsatisfiable:
                # No input of it can be made invalid (a free-form path string, only the token).
                assert mode is GenerationMode.NEGATIVE
            except (Exception, BaseExceptionGroup) as exc:  # schemathesis' FailureGroup
                failures.append(f"{operation.label} ({mode.value}): {exc}"[:3000])
    assert not failures, "\n\n".join(failures)


def cases(
    operation: Any, mode: GenerationMode, examples: int, headers: dict[str, str], run: Callable[[Any], None]
) -> Callable[[], None]:
    """A hypothesis test that runs `run` on up to `examples` generated cases of `operation`."""

    # The bearer token is fixed: negative cases mutate the request, never the credentials.
    @given(case=operation.as_strategy(generation_mode=mode, headers=headers))
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def check(case: Any) -> None:
        run(case)

    return check  # type: ignore[no-any-return]


def _has_inputs(operation: Any) -> bool:
    return bool(operation.path_parameters or operation.query or operation.headers or operation.body)


@pytest.mark.parametrize("api", ["command", "query"])
async def test_generated_requests_get_no_server_error_and_answers_match_the_schema(
    system: System, api: str
) -> None:
    async with loopback.client(base_url=system.command_url, timeout=10) as commands:
        admin = await sign_up_admin(commands, system.settings)
        await create_campaign(commands, admin)
    base_url = system.command_url if api == "command" else system.query_url
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json", config=CONFIG)
    counts: dict[str, int] = {}

    def seen(label: str) -> None:
        counts[label] = counts.get(label, 0) + 1

    run_operations(schema, api, base_url, admin.auth, seen)
    total = sum(counts.values())
    print(f"{api} API: {total} generated cases over {len(counts)} operations: {counts}")
    assert total >= MIN_CASES, counts
