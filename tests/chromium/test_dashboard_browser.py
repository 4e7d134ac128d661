"""The dashboard in a real headless Chromium: sign in, charts drawn in the DOM, a filter that changes
the list, and the screenshot in docs/dashboard.png.

Needs /usr/bin/chromium (Debian's ``chromium`` package) and the ``playwright`` Python package, which
drives that browser (``playwright install`` is never run: no downloaded browser).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.analytics.web import serve
from tests.chromium.demo import seed_demo

CHROMIUM = Path("/usr/bin/chromium")
DOCS = Path(__file__).resolve().parents[2] / "docs"
PASSWORD = "demo password 2026"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [
    pytest.mark.chromium,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is absent (apt-get install chromium)"),
]


def test_sign_in_see_charts_filter_comments_and_take_the_screenshot(tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    from nps_sync.web.auth import hash_password

    env = {"NPS_SYNC_DASHBOARD_PASSWORD_HASH": hash_password(PASSWORD)}
    with serve(tmp_path / "site", env=env, seeder=seed_demo) as url, sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"),  # a new --user-data-dir
            executable_path=str(CHROMIUM),
            headless=True,
            args=FLAGS,
            viewport={"width": 1280, "height": 900},
            device_scale_factor=1,
        )
        try:
            page = browser.new_page()
            page.goto(f"{url}/dashboard?segment=plan")
            assert page.url.startswith(f"{url}/dashboard/login")
            page.fill("#password", "not the password")
            page.click("button[type=submit]")
            assert "Wrong password." == page.inner_text(".login-error")
            page.fill("#password", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_selector("svg.trend")
            assert f"{url}/dashboard?segment=plan" == page.url

            # Twelve months of history: twelve points, a confidence band, bars for three plans.
            assert 12 == page.locator("svg.trend circle.point").count()
            band = page.locator("svg.trend polygon.ci-band")
            assert 1 == band.count()
            box = band.bounding_box()
            assert box is not None
            assert box["width"] > 500
            assert box["height"] > 20
            plans = page.eval_on_selector_all(
                "svg.segments rect.bar", "els => els.map(e => e.dataset.segment)"
            )
            assert ["enterprise", "pro", "starter"] == sorted(plans)
            assert 11 == page.locator("svg.scores rect.score-bar").count()
            assert 9 == page.locator("#transitions td.cell").count()
            assert "invoice portal" in page.inner_text("#themes")

            shown = page.eval_on_selector_all("#comments .comment", "els => els.map(e => e.dataset.category)")
            assert {"detractor", "passive", "promoter"} == set(shown)
            page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)

            page.click("#comments a.chip:text-is('detractors')")
            page.wait_for_url("**category=detractor**")
            filtered = page.eval_on_selector_all(
                "#comments .comment", "els => els.map(e => e.dataset.category)"
            )
            assert filtered
            assert {"detractor"} == set(filtered)
        finally:
            browser.close()
    DOCS.mkdir(exist_ok=True)
    if os.environ.get("NPS_SYNC_UPDATE_SCREENSHOT") == "1":  # refresh docs/dashboard.png on purpose only
        shutil.copyfile(tmp_path / "dashboard.png", DOCS / "dashboard.png")
