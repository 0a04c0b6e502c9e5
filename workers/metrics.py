"""Prometheus counters of the workers (labelled by worker, so values exist only once used)."""

from __future__ import annotations

from prometheus_client import Counter

EVENTS = Counter("worker_events_total", "Events a worker consumed, by outcome", ["worker", "outcome"])
EMAILS_SENT = Counter("worker_emails_sent_total", "E-mails the SMTP server accepted", ["worker"])
RETRIES = Counter("worker_retries_total", "Failed attempts that were tried again", ["worker"])
DEAD_LETTERS = Counter("worker_dead_letters_total", "Events sent to a dead-letter topic", ["worker", "topic"])
REPORTS_BUILT = Counter("worker_reports_built_total", "Campaign reports stored", ["worker"])
CLAIMS_LOST = Counter(
    "worker_send_claims_lost_total",
    "Sends whose claim another worker took over while this one stalled, by where it was noticed: "
    "at send (nothing handed over) or at mark (the message may have gone out twice)",
    ["worker", "stage"],
)
