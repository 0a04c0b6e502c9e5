"""The published contracts, checked with tools nobody here wrote, and held to their snapshots."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest
from openapi_spec_validator import validate

from events import Topics, new_envelope
from events.asyncapi import asyncapi_document
from events.catalogue import CONSUMERS
from events.types import EVENT_TYPES
from service_runtime.settings import Settings
from tests.contracts.documents import NODE, published_documents, render, snapshot_path
from tests.contracts.records import record_errors

PROBLEM_REF = {"$ref": "#/components/schemas/ProblemDetails"}


@pytest.fixture(scope="module")
def documents() -> dict[str, dict[str, Any]]:
    return published_documents()


@pytest.mark.parametrize("name", ["command-api.openapi", "query-api.openapi"])
def test_openapi_document_validates(documents: dict[str, dict[str, Any]], name: str) -> None:
    validate(documents[name])


def test_asyncapi_document_passes_the_official_parser(tmp_path: Path) -> None:
    node = shutil.which("node")
    assert node, "Node.js is needed for the AsyncAPI parser"
    assert (NODE / "node_modules" / "@asyncapi" / "parser").is_dir(), "run `make deps` (npm ci)"
    document = tmp_path / "asyncapi.json"
    document.write_bytes(orjson.dumps(asyncapi_document(Topics("t1."))))
    checked = subprocess.run(
        [node, "parse-asyncapi.mjs", str(document)], cwd=NODE, capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "ok: AsyncAPI 3.0.0" in checked.stdout


def test_the_parser_check_fails_on_a_broken_document(tmp_path: Path) -> None:
    document = asyncapi_document()
    del document["operations"]["outbox-relay.send.users.events"]["channel"]
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(document))
    checked = subprocess.run(
        ["node", "parse-asyncapi.mjs", str(path)], cwd=NODE, capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 1, checked.stdout


@pytest.mark.parametrize("name", ["command-api.openapi", "query-api.openapi", "events.asyncapi"])
def test_published_contract_matches_its_snapshot(documents: dict[str, dict[str, Any]], name: str) -> None:
    path = snapshot_path(name)
    assert path.exists(), f"no snapshot {path}; run `make snapshots` and commit it"
    assert render(documents[name]) == path.read_text(), (
        f"{name} changed: if on purpose, run `make snapshots` and commit {path.name} with the change"
    )


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(m, p, op) for p, item in document["paths"].items() for m, op in item.items()]


@pytest.mark.parametrize("name", ["command-api.openapi", "query-api.openapi"])
def test_every_error_answer_is_the_one_shared_problem_schema(
    documents: dict[str, dict[str, Any]], name: str
) -> None:
    document = documents[name]
    assert "ProblemDetails" in document["components"]["schemas"]
    assert "HTTPValidationError" not in document["components"]["schemas"]
    for method, path, operation in _operations(document):
        for status, response in operation["responses"].items():
            if int(status) >= 400:
                assert response["content"] == {"application/problem+json": {"schema": PROBLEM_REF}}, (
                    method,
                    path,
                    status,
                )
            if status in ("429", "503"):
                assert "Retry-After" in response["headers"], (method, path, status)


@pytest.mark.parametrize("name", ["command-api.openapi", "query-api.openapi"])
def test_servers_contact_and_tag_descriptions_are_filled_in(
    documents: dict[str, dict[str, Any]], name: str
) -> None:
    document = documents[name]
    assert document["servers"] and document["info"]["contact"]["name"]
    described = {tag["name"] for tag in document["tags"] if tag["description"]}
    used = {tag for _, _, op in _operations(document) for tag in op.get("tags", [])}
    assert used <= described


def test_patch_requires_if_match_and_declares_412_and_428_as_problems(
    documents: dict[str, dict[str, Any]],
) -> None:
    patch = documents["command-api.openapi"]["paths"]["/campaigns/{campaign_id}"]["patch"]
    if_match = next(p for p in patch["parameters"] if p["name"] == "If-Match")
    assert if_match["in"] == "header" and if_match["required"] is True
    assert [p["name"] for p in patch["parameters"]].count("If-Match") == 1
    for status in ("412", "428"):
        assert patch["responses"][status]["content"]["application/problem+json"]["schema"] == PROBLEM_REF
    assert "ETag" in patch["responses"]["200"]["headers"]


def test_write_and_read_answers_declare_their_headers(documents: dict[str, dict[str, Any]]) -> None:
    command = documents["command-api.openapi"]["paths"]
    assert {"Location", "ETag"} <= set(command["/campaigns"]["post"]["responses"]["201"]["headers"])
    assert "Retry-After" in command["/auth/login"]["post"]["responses"]["429"]["headers"]
    query = documents["query-api.openapi"]["paths"]
    assert "ETag" in query["/campaigns/{campaign_id}"]["get"]["responses"]["200"]["headers"]


def test_the_report_route_declares_what_the_server_answers(documents: dict[str, dict[str, Any]]) -> None:
    report = documents["query-api.openapi"]["paths"]["/campaigns/{campaign_id}/report"]["get"]
    ok = report["responses"]["200"]["content"]
    assert ok["application/json"]["schema"] == {"$ref": "#/components/schemas/CampaignReport"}
    assert ok["text/csv"]["schema"]["type"] == "string"
    assert {"401", "404"} <= set(report["responses"])


def test_asyncapi_lists_the_relays_sends_and_every_consumer_group(
    documents: dict[str, dict[str, Any]],
) -> None:
    document = documents["events.asyncapi"]
    operations = document["operations"].values()
    dead_letter_channels = {
        op["channel"]["$ref"] for key, op in document["operations"].items() if ".deadLetter." in key
    }
    sends = {op["channel"]["$ref"] for op in operations if op["action"] == "send" and "relay" in op["title"]}
    assert sends == {"#/channels/users.events", "#/channels/campaigns.events"}
    groups = {
        group
        for op in operations
        if op["action"] == "receive"
        for group in op["bindings"]["kafka"]["groupId"]["enum"]
    }
    assert groups == {
        "projector.campaigns",
        "projector.users",
        "projector.stats",
        "worker.notifications",
        "worker.reports",
    }
    assert dead_letter_channels == {"#/channels/users.events.dlq", "#/channels/campaigns.events.dlq"}


def test_the_table_names_the_groups_the_processes_join() -> None:
    from readmodels.groups import monitored_groups

    settings = Settings(topic_prefix="p1.")
    topics = Topics(settings.topic_prefix)
    joined = {(g.group_id, tuple(sorted(g.topics))) for g in monitored_groups(settings)}
    declared = {
        (c.group_id(settings.topic_prefix), tuple(sorted(topics.for_aggregate(a) for a in c.aggregates)))
        for c in CONSUMERS
    }
    assert declared == joined


def test_dead_letters_document_every_dlq_header() -> None:
    from events import dead_letters

    headers = asyncapi_document()["components"]["schemas"]["DeadLetterHeaders"]
    assert set(dead_letters.HEADER_DESCRIPTIONS) <= set(headers["required"])
    for name, description in dead_letters.HEADER_DESCRIPTIONS.items():
        assert headers["properties"][name]["description"] == description
    assert "correlation_id" in headers["properties"]


SAMPLE_PAYLOADS: dict[str, dict[str, Any]] = {
    "UserRegistered": {"email": "ana@example.com", "name": "Ana", "roles": ["user"]},
    "UserLoggedIn": {},
    "UserRolesChanged": {"roles": ["user", "admin"]},
    "UserPasswordChanged": {},
    "CampaignCreated": {
        "owner_id": "u1",
        "name": "Spring",
        "channel": "email",
        "budget": {"amount": "10.00", "currency": "EUR"},
        "starts_at": "2027-03-01T00:00:00Z",
        "ends_at": "2027-03-31T00:00:00Z",
    },
    "CampaignUpdated": {"name": "Summer"},
    "CampaignScheduled": {"starts_at": "2027-03-01T00:00:00Z", "ends_at": "2027-03-31T00:00:00Z"},
    "CampaignUnscheduled": {},
    # As the scheduler fires it (by hand the payload is empty).
    "CampaignActivated": {
        "timer": {"timer_id": "timer:c1:v2:activate", "due_at": "2027-03-01T00:00:00Z", "lateness_ms": 12}
    },
    "CampaignPaused": {},
    "CampaignCompleted": {},
    "CampaignDeleted": {},
}


def _record(event_type: str) -> tuple[str, bytes, list[tuple[str, bytes]]]:
    # The relay's own encoding and headers (command_api.adapters.kafka_publisher).
    from command_api.adapters.kafka_publisher import _headers
    from events import encode_event

    envelope = new_envelope(
        event_type=event_type,
        aggregate_id="a1",
        aggregate_version=3,
        payload=SAMPLE_PAYLOADS[event_type],
        correlation_id="c1",
    )
    topic = Topics().for_aggregate(envelope.aggregate_type)
    return topic, encode_event(envelope), _headers(envelope)


def test_every_event_type_as_the_relay_encodes_it_matches_its_message() -> None:
    assert set(SAMPLE_PAYLOADS) == set(EVENT_TYPES), "add a sample payload for the new event type"
    document = asyncapi_document()
    for event_type in EVENT_TYPES:
        topic, value, headers = _record(event_type)
        assert record_errors(document, topic, value, headers) == [], event_type


def test_a_record_off_its_contract_is_caught() -> None:
    document = asyncapi_document()
    topic, value, headers = _record("CampaignCreated")
    event = orjson.loads(value)
    wrong_version = orjson.dumps({**event, "schema_version": 1})
    assert any("schema_version" in e for e in record_errors(document, topic, wrong_version, headers))
    extra_field = orjson.dumps({**event, "payload": {**event["payload"], "budget": 10}})
    assert record_errors(document, topic, extra_field, headers)
    other_type = [(k, b"CampaignPaused" if k == "event_type" else v) for k, v in headers]
    assert any("headers" in e for e in record_errors(document, topic, value, other_type))
    no_headers: list[tuple[str, bytes]] = []
    assert record_errors(document, topic, value, no_headers)
    assert record_errors(document, "users.events", value, headers)
