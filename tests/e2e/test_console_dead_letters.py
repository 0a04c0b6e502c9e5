"""The console's dead letters and audit in Debian's Chromium against the real services: a dead
letter re-driven from the page (after its confirmation dialog) is applied, and the audit line for
it is read on the page; a verify and a rebuild (confirmed) started on the page finish there, are
shown as the last ones with their results and audited with them; the gaps and repairs view lists
every projection's report and an event parked out of order with the gap it waits on; the sign-in
and the sign-out are audited; a non-admin gets 403 from the console's routes."""

from __future__ import annotations

import re

import pytest
from aiokafka import AIOKafkaProducer
from playwright.async_api import async_playwright, expect

from events import EventEnvelope, Topics
from service_runtime.settings import Settings
from tests.e2e.console_browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, for_the_console, sign_in_on_page
from tests.e2e.monitor_session import log_in, register
from tests.integration.deadletters.test_dlq_operations import dead_letter_written_on_a_timeout
from tests.integration.read_side.conftest import EventProducer, record_in_log
from tests.integration.read_side.workload import new_campaign
from tests.support import loopback
from tests.support.services import RunningServices
from tests.support.waiting import eventually

DESKTOP = {"width": 1280, "height": 800}
WHEN = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")  # format.js fmtDateTime


async def produce(settings: Settings, envelopes: list[EventEnvelope]) -> None:
    """Onto the events topics as the relay would (here: out of order)."""
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, acks="all", enable_idempotence=True
    )
    await producer.start()
    try:
        await EventProducer(settings, producer).publish(envelopes)
    finally:
        await producer.stop()


pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (make deps)"),
]


async def test_an_admin_re_drives_a_dead_letter_from_the_page_and_reads_its_audit_line(
    services: RunningServices,
) -> None:
    # Gaps are left parked (not repaired from the log) while the page shows them.
    for_the_console(services, console_rebuild_grace_seconds=0.0, gap_repair_delay_seconds=3600.0)
    services.start(["command-api", "query-api", "relay", "projectors"])
    services.wait_ready()
    email = await register(services)
    settings = services.settings
    dlq_topic = Topics.dlq(Topics(settings.topic_prefix).campaigns)
    # A good event that a projector dead-lettered on a transient error (Redis timed out).
    campaign = new_campaign("owner-1")
    await dead_letter_written_on_a_timeout(settings, campaign.events[0], origin_offset=7)
    admin = {"Authorization": f"Bearer {await log_in(services, email)}"}
    ARTIFACTS.mkdir(exist_ok=True)

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport=DESKTOP)
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await sign_in_on_page(page, services, email)
            await expect(page.locator("#connection")).to_have_attribute("data-state", "live", timeout=10_000)

            await page.click("#tab-deadletters")
            topic = page.locator(f'.dlq-topic[data-topic="{dlq_topic}"]')
            row = topic.locator("tr", has_text=campaign.aggregate_id)
            await expect(row).to_have_count(1, timeout=15_000)
            await expect(row).to_contain_text("TimeoutError")
            await expect(topic.locator(".card-head")).to_contain_text("1 pending")

            # Cancelling the dialog re-drives nothing.
            await row.locator("button[data-redrive]").click()
            await expect(page.locator("#confirm-dialog")).to_be_visible()
            await expect(page.locator("#confirm-text")).to_contain_text(dlq_topic)
            await page.click("#confirm-no")
            await expect(page.locator("#confirm-dialog")).to_be_hidden()
            await expect(row.locator("button[data-redrive]")).to_be_visible()

            await row.locator("button[data-redrive]").click()
            await page.click("#confirm-yes")
            await expect(page.locator("#dlq-result")).to_contain_text("Re-driven: 1 record", timeout=15_000)
            await expect(row).to_contain_text("re-driven")
            await page.screenshot(path=str(ARTIFACTS / "console-dead-letters.png"))

            # It is applied: the campaign is in its read model.
            async with loopback.client(base_url=services.query_url, timeout=10) as reads:

                async def applied() -> bool:
                    found = await reads.get(f"/campaigns/{campaign.aggregate_id}", headers=admin)
                    return found.status_code == 200 and found.json()["version"] == 1

                await eventually(applied, timeout=30, what="the re-driven campaign in the read model")

            # The audit line for it, without leaving the page.
            await page.click("#tab-audit")
            line = page.locator('#audit tr[data-action="dead-letters.redrive"]')
            await expect(line).to_have_count(1)
            await expect(line).to_contain_text(email)
            await expect(line.locator("td.result")).to_have_text("ok")
            await expect(line).to_contain_text("redriven 1")

            # A verify started from the projections view runs in a projectors process; its
            # progress and result come over the socket.
            await page.click("#tab-pipeline")
            await page.select_option("#verify-projection", "users")
            await page.click("#verify-start")
            operation = page.locator("#operations li").first
            await expect(operation).to_have_attribute("data-state", "ok", timeout=60_000)
            await expect(operation).to_contain_text("finished: no drift")
            await expect(operation).to_contain_text("users matches")
            # The last verify, with its result, from its audit line.
            await expect(page.locator("#last-verify")).to_have_attribute("data-result", "ok", timeout=10_000)
            await expect(page.locator("#last-verify")).to_contain_text("users matches")
            await expect(page.locator("#last-rebuild")).to_have_text("none yet")

            # A rebuild, confirmed in the dialog (cancelling starts nothing).
            await page.select_option("#verify-projection", "campaigns")
            await page.click("#rebuild-start")
            await expect(page.locator("#confirm-title")).to_have_text("Rebuild projections?")
            await page.click("#confirm-no")
            await expect(page.locator("#operations li")).to_have_count(1)
            await page.click("#rebuild-start")
            await page.click("#confirm-yes")
            rebuild = page.locator("#operations li").first
            await expect(rebuild).to_contain_text("rebuild campaigns", timeout=10_000)
            await expect(rebuild).to_have_attribute("data-state", "ok", timeout=60_000)
            await expect(rebuild).to_contain_text("campaigns → campaigns.2")
            await expect(page.locator("#last-rebuild")).to_contain_text(
                "campaigns → campaigns.2", timeout=10_000
            )
            await page.screenshot(path=str(ARTIFACTS / "console-verify.png"))

            # Gaps and repairs: every projection's parked events and repairs, from its report.
            await page.click("#tab-gaps")
            for projection in ("campaigns", "stats", "users"):
                row = page.locator(f'#gaps tr[data-projection="{projection}"]')
                await expect(row).to_have_count(1, timeout=10_000)
                await expect(row.locator('td[data-field="aggregates_with_parked_events"]')).to_have_text("0")

            # An event projected out of order: version 3 of an aggregate at version 1 is parked,
            # and the view lists it with the gap it waits on (the gap repair is held off here).
            gapped = new_campaign("owner-2")
            gapped.then("CampaignActivated")
            gapped.then("CampaignPaused")
            # In the log as the relay would have published them (v2 nowhere): the stats
            # projection parks its change unnamed, and the view names it from the log.
            await record_in_log(settings, [gapped.events[0], gapped.events[2]])
            await produce(settings, [gapped.events[0], gapped.events[2]])
            for projection in ("campaigns", "stats"):
                card = page.locator(f'.parked-projection[data-projection="{projection}"]')
                parked = card.locator(f'tr[data-aggregate="{gapped.aggregate_id}"]')
                await expect(parked).to_have_count(1, timeout=20_000)
                await expect(parked).to_contain_text("CampaignPaused")
                await expect(parked.locator('td[data-field="read_version"]')).to_have_text("v1")
                await expect(parked.locator('td[data-field="missing"]')).to_have_text("v2")
                await expect(parked.locator('td[data-field="version"]')).to_have_text("v3")
                await expect(parked.locator('td[data-field="parked_at"]')).to_have_text(WHEN)
            await page.screenshot(path=str(ARTIFACTS / "console-gaps.png"))

            await page.click("#tab-audit")
            # The sign-in is audited too, in the signed-in admin's name.
            for action in ("projections.verify", "projections.rebuild", "console.sign-in"):
                line = page.locator(f'#audit tr[data-action="{action}"]')
                await expect(line).to_have_count(1)
                await expect(line.locator("td.result")).to_have_text("ok")
                await expect(line).to_contain_text(email)

            # Signing out is audited before the session ends.
            async with page.expect_response(lambda r: r.url.endswith("/auth/logout")):
                await page.click("#sign-out")
            await expect(page.locator("#sign-in")).to_be_visible()
            assert not errors, errors
        finally:
            await browser.close()
    # A logout ends the user's access tokens everywhere: the audit is read with a new one.
    admin = {"Authorization": f"Bearer {await log_in(services, email)}"}
    async with loopback.client(base_url=services.query_url, timeout=10) as client:
        lines = (await client.get("/console/audit", headers=admin)).json()["items"]
    newest = lines[0]
    assert (newest["action"], newest["result"], newest["email"]) == (
        "console.sign-out",
        "ok",
        email,
    )

    # A non-admin is refused by every console route.
    user = {"Authorization": f"Bearer {await log_in(services, await register(services, admin=False))}"}
    async with loopback.client(base_url=services.query_url, timeout=10) as client:
        assert (await client.get("/console/dead-letters", headers=user)).status_code == 403
        assert (await client.get("/console/audit", headers=user)).status_code == 403
        refused = await client.post(
            "/console/dead-letters/redrive", headers=user, json={"ref": f"{dlq_topic}:0:0", "confirm": True}
        )
        assert refused.status_code == 403
        verify = await client.post("/console/projections/verify", headers=user, json={})
        assert verify.status_code == 403
        rebuild = await client.post("/console/projections/rebuild", headers=user, json={"confirm": True})
        assert rebuild.status_code == 403
