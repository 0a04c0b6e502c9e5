"""What the console's browser tests share: Debian's Chromium, and signing in on the page."""

from __future__ import annotations

from pathlib import Path

from playwright.async_api import Page, expect

from tests.e2e.monitor_session import PASSWORD
from tests.support.services import RunningServices

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def for_the_console(services: RunningServices, **more: object) -> None:
    """The page signs in on the command API, which answers the query API's origin (CORS)."""
    services.settings = services.settings.model_copy(
        update={
            "console_origins": services.query_url,
            "command_api_public_url": services.command_url,
            **more,
        }
    )


async def sign_in_on_page(page: Page, services: RunningServices, email: str) -> None:
    """Type the e-mail and password into the page's form and submit it (no token is pasted)."""
    await page.goto(f"{services.query_url}/monitor")
    await expect(page.locator("#sign-in")).to_be_visible()
    await page.fill("form#sign-in-form input[type=email]", email)
    await page.fill("form#sign-in-form input[type=password]", PASSWORD)
    await page.press("form#sign-in-form input[type=password]", "Enter")
