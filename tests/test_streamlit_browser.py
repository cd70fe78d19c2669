"""End to end in a browser: ``make demo``'s API and UI; headless Chromium takes the sample and segments it.

Needs Debian's ``chromium`` at /usr/bin/chromium (driven by Playwright), which ``make test`` installs where it
can (``make browser``). Without it the test fails, naming the package: it never skips. The screenshot is saved
as ``test-artifacts/streamlit_ui.png``.
"""

from __future__ import annotations

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
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (`make browser` or apt-get install chromium)")


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


def test_a_missing_browser_fails_with_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setattr(sys.modules[__name__], "CHROMIUM", tmp_path / "no-chromium")
    with pytest.raises(pytest.fail.Exception, match="apt-get install chromium"):
        _require_browser()
