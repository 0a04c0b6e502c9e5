"""The operator console in Debian's Chromium against the real services: sign in with e-mail and
password, a new campaign live within 2 s, its aggregate and time travel, token rotation, sign-out,
a non-admin refused, and bounded memory under a burst of events."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from playwright.async_api import Page, Response, async_playwright, expect

from readmodels.keyspace import announcement_channel
from service_runtime.redis_client import connect_redis
from tests.e2e.console_browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, for_the_console, sign_in_on_page
from tests.e2e.monitor_session import change, create_campaigns, log_in, register
from tests.support import loopback
from tests.support.services import RunningServices
from tests.support.waiting import eventually

ALL = ["command-api", "query-api", "relay", "projectors", "workers"]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
MAX_EVENTS, MAX_ROWS = 1000, 250  # state.js

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (make deps)"),
]


async def live(page: Page) -> None:
    await expect(page.locator("#connection")).to_have_attribute("data-state", "live", timeout=10_000)


async def test_an_admin_signs_in_follows_a_campaign_live_and_time_travels(services: RunningServices) -> None:
    # Access tokens live 8 s: the page must rotate its session several times during the test.
    for_the_console(services, access_token_ttl_seconds=8, monitor_sample_seconds=1.0)
    services.start(ALL)
    services.wait_ready()
    email = await register(services)
    ARTIFACTS.mkdir(exist_ok=True)

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport=DESKTOP)
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            refresh_tokens: list[str] = []  # as the command API hands them to the page

            async def keep(response: Response) -> None:
                if response.url.endswith(("/auth/login", "/auth/refresh")) and response.ok:
                    refresh_tokens.append((await response.json())["refresh_token"])

            page.on("response", keep)
            await sign_in_on_page(page, services, email)
            await live(page)
            assert page.url == f"{services.query_url}/monitor"  # no token in the URL
            signed_in_at = asyncio.get_running_loop().time()

            # A new campaign's event is on the page within 2 s of its command.
            token = await log_in(services, email)
            [campaign_id] = await create_campaigns(services, token, ["Time travel"])
            await expect(page.locator("#events tr", has_text=campaign_id)).to_have_count(1, timeout=2_000)
            await change(services, token, campaign_id, "activate")
            await expect(page.locator("#events tr", has_text="CampaignActivated")).to_have_count(
                1, timeout=10_000
            )
            await page.wait_for_timeout(1200)  # a throughput sample or two on the chart
            await page.screenshot(path=str(ARTIFACTS / "console-desktop.png"))

            # Its aggregate, opened by keyboard from the live row: the history, newest state shown.
            opener = page.locator("#events tr", has_text="CampaignCreated").locator("button.open")
            await opener.focus()
            await page.keyboard.press("Enter")
            await expect(page.locator("#view-aggregate")).to_be_visible()
            history = page.locator("#history tr")
            await expect(history).to_have_count(2)
            await expect(history.nth(0)).to_contain_text("CampaignCreated")
            await expect(history.nth(1)).to_contain_text("CampaignActivated")
            await expect(history.nth(0).locator("td.correlation")).not_to_be_empty()
            await history.nth(0).locator("summary").click()
            await expect(history.nth(0).locator("pre.payload")).to_contain_text('"name": "Time travel"')
            state = page.locator("#aggregate-state")
            await expect(state).to_contain_text('"status": "active"')
            # Time travel to version 1: the campaign as it was created.
            await page.select_option("#as-of-version", "1")
            await expect(page.locator("#as-of-note")).to_contain_text("As of version 1")
            await expect(state).to_contain_text('"status": "draft"')
            await expect(state).to_contain_text('"version": 1')
            # The same through the row's button and by a typed id.
            await history.nth(1).locator("button[data-version]").click()
            await expect(state).to_contain_text('"version": 2')
            await page.fill("#aggregate-id", "no-such-campaign")
            await page.press("#aggregate-id", "Enter")
            await expect(page.locator("#aggregate-error")).to_contain_text("No campaign has the id")

            # The relay and projections view, by keyboard from the tabs.
            await page.focus("#tab-aggregate")
            await page.keyboard.press("ArrowRight")
            await expect(page.locator("#view-pipeline")).to_be_visible()
            await expect(page.locator("#relay-panel .pipeline-card")).to_have_count(1)
            await expect(page.locator("#projections-panel .pipeline-card")).to_have_count(3)
            await expect(page.locator("#relay-panel")).to_contain_text("lease holder")
            await page.click("#tab-live")

            # Well past the first access token's life, the session was rotated and the feed lives.
            await page.wait_for_timeout(
                max(0, 10_000 - 1000 * (asyncio.get_running_loop().time() - signed_in_at))
            )
            assert len(refresh_tokens) >= 2, refresh_tokens
            await live(page)
            [later] = await create_campaigns(services, await log_in(services, email), ["Later"])
            await expect(page.locator("#events tr", has_text=later)).to_have_count(1, timeout=10_000)

            # A reload forgets the session: the password is asked again.
            await page.reload()
            await expect(page.locator("#sign-in")).to_be_visible()
            await sign_in_on_page(page, services, email)
            await live(page)

            # Signing out revokes the refresh token's family on the command API.
            async with page.expect_response(lambda r: r.url.endswith("/auth/logout")) as logout:
                await page.click("#sign-out")
            assert (await logout.value).status == 204
            await expect(page.locator("#sign-in")).to_be_visible()
            async with loopback.client(base_url=services.command_url) as commands:
                refused = await commands.post("/auth/refresh", json={"refresh_token": refresh_tokens[-1]})
            assert refused.status_code == 401

            # At phone width the console fits the screen.
            phone = await browser.new_page(viewport=PHONE, is_mobile=True, has_touch=True)
            phone.on("pageerror", lambda exc: errors.append(str(exc)))
            await sign_in_on_page(phone, services, email)
            await live(phone)
            # A fresh event for its live table, so the width is measured with rows in it.
            await create_campaigns(services, await log_in(services, email), ["Phone"])
            await expect(phone.locator("#events tr").first).to_be_visible(timeout=10_000)
            assert await phone.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
            await phone.screenshot(path=str(ARTIFACTS / "console-phone.png"))
            assert not errors, errors
        finally:
            await browser.close()


async def test_a_non_admin_is_refused_with_a_clear_message(services: RunningServices) -> None:
    for_the_console(services)
    services.start(["command-api", "query-api", "relay", "projectors"])
    services.wait_ready()
    email = await register(services, admin=False)
    # Projected, so the audit line of the refused sign-in names the user by e-mail too.
    own = {"Authorization": f"Bearer {await log_in(services, email)}"}
    async with loopback.client(base_url=services.query_url, timeout=10) as client:

        async def projected() -> bool:
            return (await client.get("/users/me", headers=own)).status_code == 200

        await eventually(projected, timeout=30, what="the user's profile in the read model")

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport=DESKTOP)
            await page.goto(f"{services.query_url}/monitor")
            await page.fill("input[type=email]", email)
            await page.fill("input[type=password]", "not the password 1")
            await page.click("#connect")
            await expect(page.locator("#sign-in-error")).to_have_text("Wrong e-mail or password.")

            async with page.expect_response(lambda r: r.url.endswith("/auth/logout")):
                await sign_in_on_page(page, services, email)
                error = page.locator("#sign-in-error")
                await expect(error).to_contain_text("not an admin", timeout=10_000)
            await expect(error).to_contain_text(email)
            await expect(page.locator("#console")).to_be_hidden()
            await expect(page.locator("#connection")).to_have_attribute("data-state", "error")
        finally:
            await browser.close()

    # The refused sign-in is audited, in the name its verified token carries: already, since the
    # page signs out (the logout awaited above) only once its sign-in record was answered, even
    # when the live feed's own 4403 told it first. Only one such line, ever.
    admin = {"Authorization": f"Bearer {await log_in(services, await register(services))}"}
    async with loopback.client(base_url=services.query_url, timeout=10) as client:
        lines = (await client.get("/console/audit", headers=admin)).json()["items"]
    assert [(line["action"], line["result"], line["email"]) for line in lines] == [
        ("console.sign-in", "refused", email)
    ]


def notice(run: str, i: int) -> bytes:
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return orjson.dumps(
        {
            "event_type": "CampaignCreated",
            "aggregate_type": "campaign",
            "aggregate_id": f"burst-{run}-{i}",
            "aggregate_version": 1,
            "occurred_at": now,
            "actor_id": "burst",
            "event_id": f"{run}-{i}",
            "correlation_id": "burst",
            "projection": "campaigns",
            "projected_at": now,
        }
    )


async def heap_after_gc(page: Page) -> int:
    cdp = await page.context.new_cdp_session(page)
    await cdp.send("HeapProfiler.collectGarbage")
    usage: dict[str, Any] = await cdp.send("Runtime.getHeapUsage")
    await cdp.detach()
    return int(usage["usedSize"])


async def test_a_burst_of_events_keeps_rows_memory_and_layout_bounded(services: RunningServices) -> None:
    for_the_console(services, monitor_sample_seconds=1.0)
    services.start(["command-api", "query-api", "projectors"])
    services.wait_ready()
    email = await register(services)
    redis = connect_redis(services.settings)
    # One bucket's announcement channel (a pipeline on a cluster sends it to that bucket's node).
    channel = announcement_channel(services.settings.redis_prefix, services.settings.read_model_buckets)

    async def burst(count: int) -> str:
        run = uuid.uuid4().hex[:8]
        for start in range(0, count, 250):
            pipe = redis.pipeline(transaction=False)
            for i in range(start, min(count, start + 250)):
                pipe.spublish(channel, notice(run, i))
            await pipe.execute()
            await asyncio.sleep(0.05)  # about 5,000 events/s: paced, not waited on
        return run

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport=DESKTOP)
            await sign_in_on_page(page, services, email)
            await live(page)
            await expect(page.locator("#lag .lag-group")).not_to_have_count(0, timeout=10_000)
            # Layout shifts from here on, except the rows moving inside the events table's own box.
            # A source is inside when its node is in the table's scroll box; a row the page has
            # already trimmed is reported without its node (Chromium gives `node: null` for a
            # node gone from the document), and is inside when both its rects lie in that box.
            await page.evaluate(
                """() => {
                  window.outsideShift = 0;
                  window.outsideSources = [];
                  const box = () => document.querySelector("#events").closest(".table-scroll")
                    .getBoundingClientRect();
                  const within = (r, b) => r.width === 0 && r.height === 0 || (
                    r.left >= b.left - 1 && r.right <= b.right + 1 &&
                    r.top >= b.top - 1 && r.bottom <= b.bottom + 1);
                  new PerformanceObserver((list) => {
                    const b = box();
                    for (const e of list.getEntries()) {
                      if (e.hadRecentInput) continue;
                      const outside = (e.sources || []).filter((s) => s.node
                        ? !(s.node.closest && s.node.closest(".table-scroll"))
                        : !(within(s.previousRect, b) && within(s.currentRect, b)));
                      if (outside.length) {
                        window.outsideShift += e.value;
                        window.outsideSources.push({value: e.value, box: b.toJSON(), sources:
                          outside.map((s) => ({node: s.node ? s.node.outerHTML.slice(0, 80) : null,
                            previous: s.previousRect.toJSON(), current: s.currentRect.toJSON()}))});
                      }
                    }
                  }).observe({ type: "layout-shift" });
                }"""
            )

            run = await burst(3 * MAX_EVENTS)
            await expect(page.locator("#events tr").first).to_contain_text(f"burst-{run}-", timeout=20_000)
            count = page.locator("#events-count")
            await expect(count).to_have_text(f"{MAX_EVENTS:,}", timeout=20_000)
            await expect(page.locator("#events tr")).to_have_count(MAX_ROWS)
            first = await heap_after_gc(page)

            run = await burst(3 * MAX_EVENTS)
            await expect(page.locator("#events tr").first).to_contain_text(f"burst-{run}-", timeout=20_000)
            await expect(count).to_have_text(f"{MAX_EVENTS:,}")
            await expect(page.locator("#events tr")).to_have_count(MAX_ROWS)
            second = await heap_after_gc(page)

            # What a tab holds stays put however many events pass through it.
            assert second < first * 1.25, (first, second)
            assert second < 48 * 1024 * 1024, second
            outside = await page.evaluate("window.outsideSources")
            assert await page.evaluate("window.outsideShift") < 0.01, outside
        finally:
            await browser.close()
            await redis.aclose()
