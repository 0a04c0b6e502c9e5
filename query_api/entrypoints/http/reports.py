"""`GET /campaigns/{id}/report`: a completed campaign's report, as JSON or CSV, for its owner or an admin.

The reports worker builds the report when the campaign completes and stores it in Redis
(`readmodels.reports`, the one place that knows the key); this route only reads it.
"""

from __future__ import annotations

import csv
import io
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from query_api.entrypoints.http.dependencies import ReadSide, caller, read_side
from readmodels.report_store import ReportStore
from readmodels.reports import CampaignReport
from service_runtime.openapi import ok, problem_responses
from service_runtime.problems import Problem
from service_runtime.tokens import Principal

CSV = "text/csv"
JSON = "application/json"
CSV_COLUMNS = ("section", "name", "value", "version", "occurred_at", "actor_id")

router = APIRouter(tags=["reports"])


@router.get(
    "/campaigns/{campaign_id}/report",
    summary="The report of a completed campaign (JSON, or CSV with Accept: text/csv)",
    response_model=None,
    responses={
        **ok(
            200,
            "The report: events by type, timeline, budget, planned and actual duration",
            model=CampaignReport,
            content={CSV: {"schema": {"type": "string", "description": "Columns: " + ",".join(CSV_COLUMNS)}}},
        ),
        **problem_responses(
            401,
            404,
            503,
            descriptions={404: "Unknown campaign, another user's, or not completed (no report yet)"},
        ),
    },
)
async def get_campaign_report(
    campaign_id: str,
    request: Request,
    principal: Annotated[Principal, Depends(caller)],
    side: Annotated[ReadSide, Depends(read_side)],
) -> Response:
    stored = await ReportStore(side.redis, side.settings.redis_prefix).load(campaign_id)
    # One answer for "no such campaign", "not yours" and "not completed yet", so ids don't leak.
    if stored is None or not (principal.is_admin or stored[0] == principal.user_id):
        raise Problem(
            404,
            f"campaign {campaign_id} has no report: a report exists once the campaign is completed "
            "(it is built within moments of completion), and only for its owner or an admin",
        )
    _, body = stored
    headers = {"Vary": "Accept"}
    if prefers_csv(request.headers.get("accept", "")):
        headers["Content-Disposition"] = f'inline; filename="campaign-{campaign_id}-report.csv"'
        return Response(report_csv(orjson.loads(body)), media_type=f"{CSV}; charset=utf-8", headers=headers)
    return Response(body, media_type=JSON, headers=headers)


def prefers_csv(accept: str) -> bool:
    """CSV when the Accept header ranks text/csv above JSON; JSON is the default."""
    csv_q, json_q = 0.0, 0.0
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        media = media.lower()
        if media in (CSV, "text/*"):
            csv_q = max(csv_q, q)
        elif media in (JSON, "application/*", "*/*"):
            json_q = max(json_q, q)
    return csv_q > json_q


def report_csv(report: dict[str, Any]) -> str:
    """The report as one CSV table: summary rows, then events by type, then the timeline.

    Sections share the columns `section,name,value,version,occurred_at,actor_id`, so a spreadsheet
    or `csv.DictReader` reads it as a single table and filters by `section`.
    """
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\r\n")
    writer.writeheader()
    summary = {
        "campaign_id": report["campaign_id"],
        "owner_id": report["owner_id"],
        "name": _inert(report["name"]),
        "channel": report["channel"],
        "status": report["status"],
        "version": report["version"],
        "budget_amount": report["budget"]["amount"],
        "budget_currency": report["budget"]["currency"],
        "starts_at": report["starts_at"],
        "ends_at": report["ends_at"],
        "planned_duration_seconds": report["planned_duration_seconds"],
        "first_activated_at": report["first_activated_at"] or "",
        "completed_at": report["completed_at"],
        "actual_duration_seconds": report["actual_duration_seconds"],
        "paused_duration_seconds": report["paused_duration_seconds"],
        "event_count": report["event_count"],
    }
    for name, value in summary.items():
        writer.writerow({"section": "summary", "name": name, "value": value})
    for event_type, count in report["events_by_type"].items():
        writer.writerow({"section": "events_by_type", "name": event_type, "value": count})
    for entry in report["timeline"]:
        writer.writerow(
            {
                "section": "timeline",
                "name": entry["event_type"],
                "version": entry["version"],
                "occurred_at": entry["occurred_at"],
                "actor_id": entry["actor_id"] or "",
            }
        )
    return out.getvalue()


def _inert(text: str) -> str:
    # A campaign name is user input: a leading = + - @ would run as a formula in a spreadsheet.
    return f"'{text}" if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text
