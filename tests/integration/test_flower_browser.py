"""Flower in a real browser, as an operator sees it while the stack runs.

Headless Chromium from the system's packages (Debian's ``chromium``), driven by Playwright; no
browser is ever downloaded (``playwright install`` is never run). The test is skipped where no
Chromium is installed; ``.ci/run`` installs it. ``SAVE_SCREENSHOTS=1`` writes the Tasks page to
``docs/flower.png`` (docs/OPERATIONS.md shows it), otherwise the screenshot goes to the test's
tmp_path.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from devtools.processes import ROOT, wait_for_log
from tests.integration.stack import Stack
from tests.support import AUTH, StripeAdmin

try:
    from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright
    from playwright.sync_api import Error as PlaywrightError
except ImportError:  # pragma: no cover - the dev extra installs it
    pytest.skip("the playwright package is not installed", allow_module_level=True)

pytestmark = pytest.mark.integration

LOGIN = ("ops", "flower-browser-password")
SCREENSHOT = ROOT / "docs" / "flower.png"
# The background-networking flags stop Chromium's own connections, which a closed network
# refuses; Playwright gives every launch a new, empty user data dir (--user-data-dir) of its own.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 60_000


def chromium_binary() -> str | None:
    configured = os.environ.get("CHROMIUM_BINARY")
    if configured:
        return configured if Path(configured).is_file() else None
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture
def browser() -> Iterator[Browser]:
    executable = chromium_binary()
    if executable is None:
        pytest.skip(
            "no Chromium installed (apt-get install chromium, or set CHROMIUM_BINARY); "
            ".ci/run installs it"
        )
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def flower_url(session_stack: Stack, worker: str) -> Iterator[str]:
    with session_stack.flower(LOGIN, name="flower-browser") as url:
        yield url


def screenshot_path(tmp_path: Path) -> Path:
    if os.environ.get("SAVE_SCREENSHOTS", "").lower() in ("1", "true", "yes", "on"):
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        return SCREENSHOT
    return tmp_path / "flower.png"


def task_row(page: Page, payment_id: str) -> Locator:
    # Celery's task id is the payment id; its uuid cell links to /task/<id>.
    link = page.locator(f'a[href$="/task/{payment_id}"]')
    return page.locator("#tasks-table tbody tr").filter(has=link)


def wait_for_succeeded_task(page: Page, url: str, payment_id: str) -> Locator:
    """The Tasks table loads once per visit: reload until the task's success event is in."""
    deadline = time.monotonic() + WAIT_MS / 1000
    while True:
        response = page.goto(url)
        assert response is not None
        assert response.status == 200
        row = task_row(page, payment_id)
        try:
            expect(row).to_contain_text("SUCCESS", timeout=3_000)
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            continue
        return row


def test_an_operator_sees_the_worker_and_the_completed_payment_in_flower(
    browser: Browser,
    flower_url: str,
    session_stack: Stack,
    worker: str,
    api_url: str,
    stripe: StripeAdmin,
    tmp_path: Path,
) -> None:
    # No login, no page: Flower answers 401, and Chromium, having no credentials to give,
    # abandons the navigation.
    anonymous = browser.new_context()
    try:
        page = anonymous.new_page()
        for path in ("/", "/tasks"):
            with (
                page.expect_response(flower_url + path) as refused,
                pytest.raises(PlaywrightError, match="ERR_INVALID_AUTH_CREDENTIALS"),
            ):
                page.goto(flower_url + path)
            assert refused.value.status == 401, path
    finally:
        anonymous.close()

    user, password = LOGIN
    context = browser.new_context(
        http_credentials={"username": user, "password": password},
        viewport={"width": 1280, "height": 480},
    )
    try:
        page = context.new_page()

        workers = page.goto(flower_url + "/")
        assert workers is not None
        assert workers.status == 200
        # "Online" comes from the worker's heartbeat events: Flower is receiving events now,
        # so the payment's task events below reach it.
        worker_row = page.locator("#workers-table tbody tr").filter(has_text=f"{worker}@")
        expect(worker_row).to_have_count(1, timeout=WAIT_MS)
        expect(worker_row).to_contain_text("Online", timeout=WAIT_MS)
        # Workers start with task events off; Flower switches them on every 5 s while it runs.
        wait_for_log(session_stack.worker_log(worker), "Events of group {task} enabled")

        customer = stripe.customer()
        paid = httpx.post(
            api_url + "/payments",
            params={"wait": 30},
            json={"account_id": customer, "amount": "42.99"},
            headers=AUTH,
            timeout=40,
        )
        assert paid.status_code == 200, paid.text
        payment_id = paid.json()["id"]
        assert paid.json()["status"] == "succeeded"

        row = wait_for_succeeded_task(page, flower_url + "/tasks", payment_id)
        expect(row).to_contain_text("payments.charge")
        expect(row).to_contain_text(payment_id)
        expect(row).to_contain_text(f"{worker}@")

        page.screenshot(path=str(screenshot_path(tmp_path)), full_page=True)
    finally:
        context.close()
