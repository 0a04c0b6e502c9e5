"""Check one Kafka record against an AsyncAPI document, as an outside consumer would (jsonschema)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson
from jsonschema import Draft202012Validator


def _resolve(document: dict[str, Any], ref: str) -> dict[str, Any]:
    node: Any = document
    for part in ref.removeprefix("#/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    assert isinstance(node, dict)
    return node


def _errors(document: dict[str, Any], schema: dict[str, Any], instance: Any) -> list[str]:
    # `#/components/...` references resolve against the root: the document's components travel along.
    rooted = {**schema, "components": document["components"]}
    validator = Draft202012Validator(rooted, format_checker=Draft202012Validator.FORMAT_CHECKER)
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
        for e in validator.iter_errors(instance)
    ]


def channel_messages(document: dict[str, Any], topic: str) -> dict[str, dict[str, Any]]:
    """The messages a topic's channel declares, by message name."""
    channels = [c for c in document["channels"].values() if c["address"] == topic]
    if len(channels) != 1:
        raise LookupError(f"{len(channels)} channels for address {topic!r}")
    messages = {}
    for entry in channels[0]["messages"].values():
        message = _resolve(document, entry["$ref"]) if "$ref" in entry else entry
        messages[message["name"]] = message
    return messages


def record_errors(
    document: dict[str, Any], topic: str, value: bytes, headers: Iterable[tuple[str, bytes]]
) -> list[str]:
    """Why the record does not match the document's message for its event type (empty: it does)."""
    header_map = {name: raw.decode() for name, raw in headers}
    try:
        event = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        return [f"value is not JSON: {exc}"]
    event_type = event.get("event_type") if isinstance(event, dict) else None
    message = channel_messages(document, topic).get(str(event_type))
    if message is None:
        return [f"{topic} declares no message {event_type!r}"]
    problems = []
    payload_schema = message["payload"]
    problems += [f"value {e}" for e in _errors(document, payload_schema, event)]
    headers_schema = message["headers"]
    if "$ref" in headers_schema:
        headers_schema = _resolve(document, headers_schema["$ref"])
    problems += [f"headers {e}" for e in _errors(document, headers_schema, header_map)]
    return problems
