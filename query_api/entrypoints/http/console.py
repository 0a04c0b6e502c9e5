"""The operator console's actions (admin only), each audited: dead letters listed and re-driven
(deadletters/ use cases, with their own `dlq_audit` record), projections verified or rebuilt (a
request a projectors process claims: projectors/entrypoints/console_operations.py), the parked
events and repairs (readmodels/parked.py, readmodels/status.py), the console's sign-ins and
sign-outs, and the audit trail.

Every action, refused or failed ones included, writes one `console_audit` line (who: user id and
e-mail; what; when; the result) and counts `console_actions_total{action,result}`. A verify's or
a rebuild's line says `queued` until the projectors process that ran it writes its result there.
"""

from __future__ import annotations

# The dead-letter operations (deadletters.bootstrap, and with it the Kafka client library) are
# imported by the console routes that use them, not by every query-API worker at start.
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field
from starlette.responses import Response

from deadletters.domain.records import InvalidRef, NotADeadLetterTopic, RecordRef
from events import Topics
from query_api.entrypoints.http.dependencies import ReadSide, admin, caller, read_side
from query_api.entrypoints.http.schemas import problems
from readmodels.generations import live_generations
from readmodels.groups import PROJECTIONS
from readmodels.json_form import json_time
from readmodels.keyspace import (
    console_operation_key,
    console_operations_queue,
    console_operations_recent,
    monitor_channel,
)
from readmodels.parked import InvalidCursor, ParkedAggregate, list_parked, parse_cursor
from readmodels.status import read_status, recent_repairs
from service_runtime.console_audit import ConsoleAction, ConsoleAudit
from service_runtime.openapi import ok
from service_runtime.problems import Problem
from service_runtime.tokens import Principal

router = APIRouter(tags=["console"])
JSON_OBJECT = {"application/json": {"schema": {"type": "object"}}}
REDRIVE = "dead-letters.redrive"
VERIFY = "projections.verify"
REBUILD = "projections.rebuild"
SIGN_IN = "console.sign-in"
SIGN_OUT = "console.sign-out"
# What the gaps view shows of a projector's status (its counters and last repairs).
GAP_STATUS = (
    "aggregates_with_parked_events",
    "parked_total",
    "gaps_repaired_total",
    "gaps_unfillable_total",
    "anti_entropy_repairs_total",
    "last_gap",
    "last_anti_entropy_repair",
)


class RedriveRequest(BaseModel):
    """One dead letter (`ref`, as `topic:partition:offset`) or one aggregate's (`topic` + `aggregate`)."""

    ref: str | None = Field(None, max_length=300, description="a dead letter, topic:partition:offset")
    topic: str | None = Field(None, max_length=249, description="a dead-letter topic (…​.dlq)")
    aggregate: str | None = Field(None, max_length=200, description="re-drive this aggregate's records")
    confirm: bool = Field(False, description="must be true: the operator confirmed the re-drive")


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def _audit(side: ReadSide) -> ConsoleAudit:
    if side.mongo is None:
        raise Problem(503, "the console's audit store is not configured", headers={"Retry-After": "1"})
    return ConsoleAudit(side.mongo[side.settings.mongo_db])


async def _email(side: ReadSide, user_id: str) -> str | None:
    from deadletters.bootstrap import UNREACHABLE

    try:
        doc = (await side.read_models.user(user_id)).doc
        email = orjson.loads(doc).get("email") if doc else None
    except (orjson.JSONDecodeError, AttributeError):
        return None
    except UNREACHABLE:
        return None
    return email if isinstance(email, str) else None


async def record(
    side: ReadSide,
    principal: Principal,
    action: str,
    target: dict[str, Any],
    result: str,
    detail: dict[str, Any] | None = None,
) -> str:
    entry = ConsoleAction(
        principal.user_id, await _email(side, principal.user_id), action, target, result, detail=detail or {}
    )
    return await _audit(side).record(entry)


def _unreachable(exc: Exception) -> Problem:
    return Problem(
        503, f"Kafka or MongoDB is unavailable: {type(exc).__name__}", headers={"Retry-After": "1"}
    )


@router.get(
    "/console/dead-letters",
    summary="Dead letters per dead-letter topic, with their reason, attempts and time (admin only)",
    response_model=None,
    responses={
        **ok(200, "Per topic: counts and the first records", content=JSON_OBJECT),
        **problems(401, 403, 503),
    },
)
async def dead_letters(
    aggregate: str | None = Query(None, max_length=200, description="only this aggregate's records"),
    principal: Principal = Depends(admin),
    side: ReadSide = Depends(read_side),
) -> Response:
    from deadletters.bootstrap import UNREACHABLE, dead_letter_operations

    try:
        async with dead_letter_operations(side.settings) as dlq:
            listings = await dlq.list(aggregate=aggregate, show=side.settings.console_dead_letters_shown)
    except UNREACHABLE as exc:
        raise _unreachable(exc) from exc
    return _json(
        {
            "topics": [
                {
                    "topic": listing.topic,
                    "total": listing.counts.total,
                    "pending": listing.counts.pending,
                    "redriven": listing.counts.redriven,
                    "records": [
                        {
                            "ref": str(r.summary.ref),
                            "aggregate_id": r.summary.aggregate_id,
                            "aggregate_version": r.summary.aggregate_version,
                            "event_type": r.summary.event_type,
                            "reason": r.summary.reason,
                            "error_type": r.summary.error_type,
                            "consumer_group": r.summary.consumer_group,
                            "attempts": r.summary.attempts,
                            "failed_at": r.summary.failed_at,
                            "redriven": r.redriven,
                        }
                        for r in listing.records
                    ],
                }
                for listing in listings
            ]
        }
    )


@router.post(
    "/console/dead-letters/redrive",
    summary="Re-drive one dead letter or one aggregate's dead letters (admin only, audited)",
    description=(
        "Produces the records back onto their original topic (once per original record; each "
        "aggregate's in version order). Needs `confirm: true`. Writes a `dlq_audit` record and a "
        "console audit line."
    ),
    response_model=None,
    responses={**ok(200, "What was re-driven", content=JSON_OBJECT), **problems(401, 403, 404, 422, 503)},
)
async def redrive(
    body: RedriveRequest, principal: Principal = Depends(admin), side: ReadSide = Depends(read_side)
) -> Response:
    target = {"ref": body.ref} if body.ref else {"topic": body.topic, "aggregate": body.aggregate}
    problem = _invalid(body, Topics(side.settings.topic_prefix))
    if problem is not None:
        await record(side, principal, REDRIVE, target, "refused", {"problem": problem.detail})
        raise problem
    actor = f"console:{principal.user_id}"
    from deadletters.bootstrap import UNREACHABLE, dead_letter_operations

    try:
        async with dead_letter_operations(side.settings) as dlq:
            if body.ref:
                report = await dlq.replay_ref(RecordRef.parse(body.ref), actor=actor)
            else:
                assert body.topic is not None and body.aggregate is not None  # _invalid checked
                report = await dlq.replay(body.topic, body.aggregate, actor=actor, yes=True)
    except UNREACHABLE as exc:
        await record(side, principal, REDRIVE, target, f"failed: {type(exc).__name__}")
        raise _unreachable(exc) from exc
    if report is None or not report.plan.redrives:
        await record(side, principal, REDRIVE, target, "nothing", {"redriven": 0})
        raise Problem(404, "no pending dead letter matches: absent, purged or already re-driven")
    detail = {
        "redriven": report.redriven,
        "settled": report.settled,
        "missing": [str(ref) for ref in report.missing],
        "dlq_audit_id": report.audit_id,
    }
    audit_id = await record(side, principal, REDRIVE, target, "ok", detail)
    return _json({**detail, "audit_id": audit_id})


def _invalid(body: RedriveRequest, topics: Topics) -> Problem | None:
    def field(name: str, reason: str) -> Problem:
        return Problem(422, f"invalid request: {name}", errors=[{"field": name, "reason": reason}])

    if not body.confirm:
        return field("confirm", "a re-drive must be confirmed (confirm: true)")
    if body.ref:
        if body.topic or body.aggregate:
            return field("ref", "give either ref, or topic and aggregate")
        try:
            ref = RecordRef.parse(body.ref)
        except (InvalidRef, NotADeadLetterTopic) as exc:
            return field("ref", str(exc))
        if ref.topic not in {Topics.dlq(topics.users), Topics.dlq(topics.campaigns)}:
            return field("ref", "not on one of this system's dead-letter topics")
        return None
    if not body.topic:
        return field("topic", "give ref, or topic and aggregate")
    if not body.aggregate:
        return field("aggregate", "give ref, or topic and aggregate")
    if body.topic not in {Topics.dlq(topics.users), Topics.dlq(topics.campaigns)}:
        return field("topic", "not one of this system's dead-letter topics")
    return None


@router.get(
    "/console/audit",
    summary="The console's audit trail, newest first (admin only)",
    response_model=None,
    responses={**ok(200, "The newest actions", content=JSON_OBJECT), **problems(401, 403, 503)},
)
async def audit(principal: Principal = Depends(admin), side: ReadSide = Depends(read_side)) -> Response:
    from deadletters.bootstrap import UNREACHABLE

    try:
        items = await _audit(side).recent(side.settings.console_audit_shown)
    except UNREACHABLE as exc:
        raise _unreachable(exc) from exc
    return _json({"items": items})


class VerifyRequest(BaseModel):
    projection: str = Field("all", max_length=100, description="a projection's name, or all")
    source: Literal["mongo", "kafka"] = Field("mongo", description="where the replay reads the events")


class RebuildRequest(VerifyRequest):
    confirm: bool = Field(False, description="must be true: the operator confirmed the rebuild")


def _unknown_projection(name: str) -> Problem | None:
    if name == "all" or name in PROJECTIONS:
        return None
    return Problem(
        422,
        "invalid request: projection",
        errors=[{"field": "projection", "reason": f"one of: {', '.join([*PROJECTIONS, 'all'])}"}],
    )


async def _queue_operation(
    side: ReadSide, principal: Principal, kind: str, action: str, target: dict[str, Any]
) -> Response:
    """Audit the request (`queued`), then queue it for a projectors process with the audit line's
    id, so the process that runs it can write the result there."""
    from deadletters.bootstrap import UNREACHABLE

    operation_id = uuid.uuid4().hex
    audit_id = await record(side, principal, action, target, "queued", {"operation_id": operation_id})
    prefix = side.settings.redis_prefix
    request = {
        "id": operation_id,
        "kind": kind,
        **target,
        "user_id": principal.user_id,
        "audit_id": audit_id,
        "requested_at": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    }
    queued = {"type": "operation", **request, "state": "queued"}
    try:
        async with side.redis.pipeline(transaction=True) as pipe:
            pipe.set(
                console_operation_key(prefix, operation_id),
                orjson.dumps(queued),
                ex=side.settings.console_operation_ttl_seconds,
            )
            pipe.lpush(console_operations_recent(prefix), operation_id)
            pipe.ltrim(console_operations_recent(prefix), 0, side.settings.console_operations_shown - 1)
            pipe.lpush(console_operations_queue(prefix), orjson.dumps(request))
            await pipe.execute()
        # After the MULTI, not in it: a channel has no slot, and the MULTI's keys share one.
        await side.redis.publish(monitor_channel(prefix), orjson.dumps(queued))
    except UNREACHABLE as exc:
        await _audit(side).finish(audit_id, action, f"failed: {type(exc).__name__}", {})
        raise _unreachable(exc) from exc
    return _json({"id": operation_id, "state": "queued", "audit_id": audit_id}, status=202)


@router.post(
    "/console/projections/verify",
    status_code=202,
    summary="Ask a projectors process to verify projections (admin only, audited)",
    description=(
        "Queues the request (Redis); a projectors process claims it, rebuilds the projections "
        "into scratch generations and compares them with the live ones. Progress and the result "
        'come over the monitor socket as `{"type": "operation", ...}` and from GET /console/operations; '
        "the result is written into the request's audit line."
    ),
    response_model=None,
    responses={**ok(202, "Queued: the operation's id", content=JSON_OBJECT), **problems(401, 403, 422, 503)},
)
async def verify(
    body: VerifyRequest, principal: Principal = Depends(admin), side: ReadSide = Depends(read_side)
) -> Response:
    target = {"projection": body.projection, "source": body.source}
    problem = _unknown_projection(body.projection)
    if problem is not None:
        await record(side, principal, VERIFY, target, "refused", {"problem": problem.detail})
        raise problem
    return await _queue_operation(side, principal, "verify", VERIFY, target)


@router.post(
    "/console/projections/rebuild",
    status_code=202,
    summary="Ask a projectors process to rebuild projections (admin only, confirmed, audited)",
    description=(
        "Queues the request (Redis); a projectors process claims it and runs `campaigns replay "
        "rebuild`'s use case: a new generation built beside the live one from the events log, "
        "caught up, swapped in, and the old one deleted after "
        "`CAMPAIGNS_CONSOLE_REBUILD_GRACE_SECONDS`. Reads keep being served throughout. Needs "
        "`confirm: true`. Progress and the result come as for a verify."
    ),
    response_model=None,
    responses={**ok(202, "Queued: the operation's id", content=JSON_OBJECT), **problems(401, 403, 422, 503)},
)
async def rebuild(
    body: RebuildRequest, principal: Principal = Depends(admin), side: ReadSide = Depends(read_side)
) -> Response:
    target = {"projection": body.projection, "source": body.source}
    problem = _unknown_projection(body.projection)
    if problem is None and not body.confirm:
        problem = Problem(
            422,
            "invalid request: confirm",
            errors=[{"field": "confirm", "reason": "a rebuild must be confirmed (confirm: true)"}],
        )
    if problem is not None:
        await record(side, principal, REBUILD, target, "refused", {"problem": problem.detail})
        raise problem
    return await _queue_operation(side, principal, "rebuild", REBUILD, target)


@router.get(
    "/console/projections/last",
    summary="The last verify and the last rebuild that ran to an outcome, from the audit (admin only)",
    response_model=None,
    responses={
        **ok(200, "Their audit lines (null: none yet)", content=JSON_OBJECT),
        **problems(401, 403, 503),
    },
)
async def last_operations(
    principal: Principal = Depends(admin), side: ReadSide = Depends(read_side)
) -> Response:
    from deadletters.bootstrap import UNREACHABLE

    audit = _audit(side)
    try:
        return _json(
            {"verify": await audit.last_finished(VERIFY), "rebuild": await audit.last_finished(REBUILD)}
        )
    except UNREACHABLE as exc:
        raise _unreachable(exc) from exc


@router.get(
    "/console/operations",
    summary="The newest console operations with their progress or result (admin only)",
    response_model=None,
    responses={**ok(200, "The newest operations", content=JSON_OBJECT), **problems(401, 403, 503)},
)
async def operations(principal: Principal = Depends(admin), side: ReadSide = Depends(read_side)) -> Response:
    prefix = side.settings.redis_prefix
    ids = await side.redis.lrange(console_operations_recent(prefix), 0, -1)
    docs = (
        await side.redis.mget(
            [console_operation_key(prefix, i.decode() if isinstance(i, bytes) else i) for i in ids]
        )
        if ids
        else []
    )
    return _json({"items": [orjson.loads(doc) for doc in docs if doc]})


class SessionRequest(BaseModel):
    action: Literal["sign-in", "sign-out"] = Field(description="what the console's user just did")


@router.post(
    "/console/session",
    summary="Record a sign-in or sign-out on the console (audited; who comes from the access token)",
    description=(
        "The console calls this right after its sign-in on the command API (with the access token "
        "it was given) and right before its sign-out. Who signed in is the verified token's user, "
        "never a field of the request, so no line can be written in someone else's name. A "
        "non-admin's sign-in is recorded as `refused` and answered 403."
    ),
    response_model=None,
    responses={
        **ok(200, "Recorded: the audit line's id", content=JSON_OBJECT),
        **problems(401, 403, 422, 503),
    },
)
async def session(
    body: SessionRequest, principal: Principal = Depends(caller), side: ReadSide = Depends(read_side)
) -> Response:
    from deadletters.bootstrap import UNREACHABLE

    action = SIGN_IN if body.action == "sign-in" else SIGN_OUT
    target = {"access_token_id": principal.token_id}
    try:
        if not principal.is_admin:
            await record(side, principal, action, target, "refused", {"problem": "not an admin"})
            raise Problem(403, "this needs the admin role")
        audit_id = await record(side, principal, action, target, "ok")
    except UNREACHABLE as exc:
        raise _unreachable(exc) from exc
    return _json({"audit_id": audit_id})


def _query_problem(name: str, reason: str) -> Problem:
    return Problem(422, f"invalid request: {name}", errors=[{"field": name, "reason": reason}])


@router.get(
    "/console/gaps",
    summary="Parked events per projection, with the gap each waits on, and the recent repairs (admin only)",
    description=(
        "Per projection: its live generation, its gap counters, a page of the aggregates with "
        "parked events (each parked event's type, version and when it was parked, the version the "
        "read model holds, the versions missing before it) and its newest gap repairs and "
        "anti-entropy repairs. Pages follow `next_cursor`, one projection at a time (`projection` "
        "and `cursor`)."
    ),
    response_model=None,
    responses={**ok(200, "Per projection", content=JSON_OBJECT), **problems(401, 403, 422, 503)},
)
async def gaps(
    projection: str = Query("all", max_length=100, description="a projection's name, or all"),
    limit: int | None = Query(
        None, ge=1, description="aggregates per page (at most CAMPAIGNS_CONSOLE_PARKED_PAGE_MAX)"
    ),
    cursor: str | None = Query(None, max_length=40, description="next_cursor of the page before"),
    principal: Principal = Depends(admin),
    side: ReadSide = Depends(read_side),
) -> Response:
    settings = side.settings
    problem = _unknown_projection(projection)
    if problem is not None:
        raise problem
    if limit is not None and limit > settings.console_parked_page_max:
        raise _query_problem("limit", f"at most {settings.console_parked_page_max}")
    if cursor and projection == "all":
        raise _query_problem("cursor", "a cursor pages one projection: give its name as projection")
    try:
        parse_cursor(cursor, settings.read_model_buckets)
    except InvalidCursor as exc:
        raise _query_problem("cursor", str(exc)) from exc
    names = list(PROJECTIONS) if projection == "all" else [projection]
    prefix = settings.redis_prefix
    generations = await live_generations(side.redis, prefix)
    statuses = await read_status(side.redis, prefix, names)
    out = []
    for name in names:
        page = await list_parked(
            side.redis,
            prefix,
            generations[name],
            name,
            buckets=settings.read_model_buckets,
            limit=limit or settings.console_parked_page_max,
            entries_shown=settings.console_parked_entries_shown,
            cursor=cursor,
        )
        named = [await _named_from_the_log(side, aggregate) for aggregate in page.aggregates]
        status = statuses[name]
        out.append(
            {
                "projection": name,
                "generation": generations[name],
                "status": {key: status[key] for key in GAP_STATUS if key in status},
                "parked": [_parked(aggregate) for aggregate in named],
                "next_cursor": page.next_cursor,
                "repairs": await recent_repairs(side.redis, prefix, name, settings.console_repairs_shown),
            }
        )
    return _json({"projections": out})


# Events read from the log per aggregate at most, to name parked entries that do not say.
LOG_LOOKUP_MAX = 1000


async def _named_from_the_log(side: ReadSide, aggregate: ParkedAggregate) -> ParkedAggregate:
    """The aggregate with its unnamed entries (a projection that announces nothing parks its
    change without the event's type) named from the events log; as it is if the log is out of reach."""
    from deadletters.bootstrap import UNREACHABLE

    unnamed = [entry.version for entry in aggregate.entries if entry.event_type is None]
    if not unnamed:
        return aggregate
    try:
        events = await side.events_log.aggregate_page(
            aggregate.aggregate_type,
            aggregate.aggregate_id,
            min(unnamed) - 1,
            min(max(unnamed) - min(unnamed) + 1, LOG_LOOKUP_MAX),
        )
    except UNREACHABLE:
        return aggregate
    logged = {event.aggregate_version: event for event in events}
    entries = tuple(
        replace(
            entry,
            event_type=logged[entry.version].event_type,
            occurred_at=json_time(logged[entry.version].occurred_at),
        )
        if entry.event_type is None and entry.version in logged
        else entry
        for entry in aggregate.entries
    )
    return replace(aggregate, entries=entries)


def _parked(aggregate: ParkedAggregate) -> dict[str, Any]:
    return {
        "aggregate_type": aggregate.aggregate_type,
        "aggregate_id": aggregate.aggregate_id,
        "read_version": aggregate.read_version,
        "missing": list(aggregate.missing),
        "parked_count": aggregate.parked_count,
        "events": [
            {
                "version": entry.version,
                "event_type": entry.event_type,
                "occurred_at": entry.occurred_at,
                "parked_at": entry.parked_at,
            }
            for entry in aggregate.entries
        ],
    }
