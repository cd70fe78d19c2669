"""End to end in a browser: ``make demo``'s API and UI; headless Chromium takes the sample and segments it.

Needs Debian's ``chromium`` at /usr/bin/chromium (driven by Playwright). Without it the test skips, unless
``BRATS_REQUIRE_BROWSER`` is set (``.ci/run`` sets it), in which case it fails. The screenshot is saved as
``test-artifacts/streamlit_ui.png``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from streamlit_support import Demo

from brats_core.config import REPO_ROOT

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run",
]  # fmt: skip
SCREENSHOT = REPO_ROOT / "test-artifacts" / "streamlit_ui.png"
#: Milliseconds to wait for the slow steps (one prediction of the real sample with a tiny model on a CPU).
SLOW_MS = 180_000


def _require_browser() -> None:
    if CHROMIUM.is_file():
        return
    message = f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium)"
    if os.environ.get("BRATS_REQUIRE_BROWSER"):
        pytest.fail(f"{message}; BRATS_REQUIRE_BROWSER is set, so the browser test may not skip")
    pytest.skip(message)


@pytest.mark.slow
def test_sample_prediction_in_the_browser(tmp_path, random_export):
    _require_browser()
    from playwright.sync_api import expect, sync_playwright

    stack = Demo(random_export, tmp_path / "api")
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            # Tall enough for the whole page: Streamlit scrolls inside its own container, not the document.
            page = browser.new_page(viewport={"width": 1400, "height": 2300})
            try:
                page.goto(stack.ui_url)
                page.get_by_text("API reachable").wait_for(timeout=60_000)

                page.get_by_role("button", name="Try the sample").click()
                page.get_by_text("Uploaded sample_case.zip").wait_for(timeout=SLOW_MS)
                expect(page.get_by_role("button", name="Download the sample zip")).to_be_visible()

                page.get_by_role("button", name="Run the segmentation").click()
                page.get_by_text("Agreement with the true mask").wait_for(timeout=SLOW_MS)
                dice_table = page.locator("table").filter(has_text="Dice")
                expect(dice_table).to_be_visible()
                expect(dice_table).to_contain_text("HD95 (mm)")
                for region in ("WT", "TC", "ET"):
                    expect(dice_table).to_contain_text(region)

                overlay = (
                    page.locator("[data-testid='stImageContainer'], [data-testid='stImage']")
                    .filter(has_text="Overlay: prediction on FLAIR")
                    .locator("img")
                )
                expect(overlay).to_be_visible()
                page.wait_for_function(
                    "img => img.complete && img.naturalWidth > 0", arg=overlay.element_handle()
                )
                legend = page.locator(".brats-legend")
                for name in ("NCR/NET", "ED", "ET"):
                    expect(legend).to_contain_text(name)
                expect(
                    page.get_by_role("button", name="Download the predicted segmentation (.nii.gz)")
                ).to_be_visible()
                assert not page.locator("[data-testid='stException']").count()
            finally:
                SCREENSHOT.parent.mkdir(exist_ok=True)
                page.screenshot(path=str(SCREENSHOT))  # also on failure, to see what went wrong
                browser.close()
    finally:
        code = stack.stop()
    assert code == 0, stack.output()


def test_a_missing_browser_fails_when_required_else_skips(monkeypatch, tmp_path):
    monkeypatch.setattr(sys.modules[__name__], "CHROMIUM", tmp_path / "no-chromium")
    monkeypatch.setenv("BRATS_REQUIRE_BROWSER", "1")
    with pytest.raises(pytest.fail.Exception, match="may not skip"):
        _require_browser()
    monkeypatch.delenv("BRATS_REQUIRE_BROWSER")
    with pytest.raises(pytest.skip.Exception, match="apt-get install chromium"):
        _require_browser()
