"""The console page in a real headless Chromium: sign in, watch campaigns arrive, filter, pause, reconnect."""

from __future__ import annotations

import re

import pytest
from aiokafka import AIOKafkaProducer
from playwright.async_api import Page, async_playwright, expect

from events import Topics
from tests.e2e.console_browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, for_the_console, sign_in_on_page
from tests.e2e.monitor_session import change, create_campaigns, log_in, register
from tests.support.services import RunningServices

ALL = ["command-api", "query-api", "relay", "scheduler", "projectors", "workers"]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (make deps)"),
]


async def rows_for(page: Page, aggregate_id: str) -> int:
    return await page.locator("#events tr", has_text=aggregate_id).count()


async def test_an_admin_watches_campaigns_arrive_live_on_the_monitor(services: RunningServices) -> None:
    # Frequent samples, so the chart and the lag panel fill within the test.
    for_the_console(services, monitor_sample_seconds=1.0)
    services.start(ALL)
    services.wait_ready()
    email = await register(services)
    token = await log_in(services, email)
    ARTIFACTS.mkdir(exist_ok=True)

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1440, "height": 1000})
            errors: list[str] = []
            console: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("console", lambda m: console.append(m.text) if m.type == "error" else None)

            await sign_in_on_page(page, services, email)
            await expect(page.locator("#connection")).to_have_attribute("data-state", "live", timeout=10_000)
            await expect(page.locator("#console")).to_be_visible()

            names = ["Spring launch", "Summer sale", "Back to school", "Black Friday", "Winter gifts"]
            ids = await create_campaigns(services, token, names)
            for campaign_id in ids:
                await expect(page.locator("#events tr", has_text=campaign_id)).to_have_count(
                    1, timeout=15_000
                )
            first_row = page.locator("#events tr").first
            await expect(first_row).to_contain_text("CampaignCreated")
            await expect(first_row.locator("td.delay")).to_have_text(re.compile(r"\d+(\.\d+)? m?s"))

            # Filter by aggregate id (clicking an id does the same), then by type.
            await page.locator("#events tr", has_text=ids[0]).locator("button.link").click()
            await expect(page.locator("#events tr")).to_have_count(1)
            await page.click("#clear-filters")
            await page.select_option("#filter-type", "CampaignActivated")
            await expect(page.locator("#events tr")).to_have_count(0)
            await expect(page.locator("#events-empty")).to_have_text("No event matches the filters")
            await page.select_option("#filter-type", "")

            # Paused, new events are held (and counted), not shown; resumed, they appear.
            await page.click("#pause")
            await expect(page.locator("#connection")).to_have_attribute("data-state", "paused")
            [held] = await create_campaigns(services, token, ["Held while paused"])
            await expect(page.locator("#pending-count")).to_have_text("1", timeout=15_000)
            assert await rows_for(page, held) == 0
            await page.click("#resume")
            await expect(page.locator("#events tr", has_text=held)).to_have_count(1)

            # A record no one can read ends up dead-lettered, and counted on the page.
            producer = AIOKafkaProducer(bootstrap_servers=services.settings.kafka_bootstrap)
            await producer.start()
            try:
                topic = Topics(services.settings.topic_prefix).campaigns
                await producer.send_and_wait(topic, b"{not json", key=b"poison")
            finally:
                await producer.stop()
            await expect(page.locator("#kpi-dlq")).to_have_attribute("data-level", "bad", timeout=15_000)

            # The throughput chart and the lag panel are fed by the projectors' sampler.
            await expect(page.locator("#lag .lag-group")).to_have_count(5, timeout=10_000)
            await expect(page.locator("#kpi-rate .kpi-value")).not_to_have_text(
                "\u2013", timeout=10_000
            )  # the placeholder dash
            # relay, scheduler, three projections, two workers
            await expect(page.locator("#processes tr")).to_have_count(7)
            await expect(page.locator("#processes .pill.running")).to_have_count(7, timeout=10_000)

            # More traffic of several kinds: activations and a pause.
            for campaign_id in ids[:3]:
                await change(services, token, campaign_id, "activate")
            await change(services, token, ids[1], "pause")
            await expect(page.locator("#events tr", has_text="CampaignPaused")).to_have_count(
                1, timeout=15_000
            )
            assert not console, console

            # The query API restarts: the page reconnects by itself and keeps what it showed.
            services.stop("query-api")
            await expect(page.locator("#connection")).to_have_attribute("data-state", "reconnecting")
            services.start(["query-api"])
            services.wait_ready()
            await expect(page.locator("#connection")).to_have_attribute("data-state", "live", timeout=20_000)
            more = await create_campaigns(services, token, ["After the restart"])
            await expect(page.locator("#events tr", has_text=more[0])).to_have_count(1, timeout=15_000)
            assert await rows_for(page, ids[0]) == 2  # created and activated, from before the restart

            await page.wait_for_timeout(1500)  # one more throughput sample on the chart
            await page.screenshot(path=str(ARTIFACTS / "monitor.png"), full_page=True)
            assert not errors, errors
        finally:
            await browser.close()
