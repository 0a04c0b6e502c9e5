"""The report route's formats: CSV layout and the Accept negotiation between JSON and CSV."""

from __future__ import annotations

import csv
import io

import orjson
import pytest

from query_api.entrypoints.http.reports import prefers_csv, report_csv
from tests.unit.workers.campaign_history import completed_campaign
from workers.domain.campaign_report import build_campaign_report


def test_csv_has_summary_counts_and_timeline_rows_under_one_header() -> None:
    report = orjson.loads(build_campaign_report(completed_campaign("c-1")).model_dump_json())
    rows = list(csv.DictReader(io.StringIO(report_csv(report))))

    summary = {r["name"]: r["value"] for r in rows if r["section"] == "summary"}
    assert summary["campaign_id"] == "c-1"
    assert summary["budget_amount"] == "3000.00"
    assert float(summary["actual_duration_seconds"]) == 5400
    counts = {r["name"]: int(r["value"]) for r in rows if r["section"] == "events_by_type"}
    assert counts["CampaignActivated"] == 2
    timeline = [(r["name"], int(r["version"])) for r in rows if r["section"] == "timeline"]
    assert timeline[0] == ("CampaignCreated", 1) and timeline[-1] == ("CampaignCompleted", 6)


def test_csv_neutralises_a_campaign_name_that_a_spreadsheet_would_run() -> None:
    report = orjson.loads(build_campaign_report(completed_campaign("c-1")).model_dump_json())
    report["name"] = '=HYPERLINK("http://evil")'
    rows = list(csv.DictReader(io.StringIO(report_csv(report))))
    assert next(r["value"] for r in rows if r["name"] == "name").startswith("'=")


@pytest.mark.parametrize(
    ("accept", "csv_wanted"),
    [
        ("text/csv", True),
        ("text/csv;q=0.9, application/json;q=0.5", True),
        ("application/json", False),
        ("*/*", False),
        ("", False),
        ("text/csv;q=0.2, */*", False),
    ],
)
def test_csv_is_served_only_when_accept_ranks_it_above_json(accept: str, csv_wanted: bool) -> None:
    assert prefers_csv(accept) is csv_wanted
