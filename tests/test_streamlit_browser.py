"""End to end in a browser: ``make demo``'s API and UI; headless Chromium takes the sample, segments it with
one model and then compares both, with progress shown, no Deploy button and a viewer that can use the page width.

Needs Debian's ``chromium`` at /usr/bin/chromium (driven by Playwright), which ``make test`` installs where it
can (``make browser``). Without it the test fails, naming the package: it never skips. The screenshot is saved
as ``test-artifacts/streamlit_ui.png``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from streamlit_support import Demo
from support import free_port

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


def _single_width(images) -> float | None:
    """The rendered width of the one element ``images`` matches; None while a rerun shows none or two (read in
    one call, so an element that appears meanwhile cannot break it)."""
    return images.evaluate_all("els => els.length === 1 ? els[0].getBoundingClientRect().width : null")


def _image(page, caption: str):
    """The <img> of the Streamlit image whose caption is ``caption``."""
    return (
        page.locator("[data-testid='stImageContainer'], [data-testid='stImage']")
        .filter(has_text=caption)
        .locator("img")
    )


@pytest.mark.slow
def test_sample_prediction_in_the_browser(tmp_path, random_export, random_unet_export):
    _require_browser()
    from playwright.sync_api import expect, sync_playwright

    stack = Demo(random_export, tmp_path / "api", unet_export=random_unet_export)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            # Tall enough for the whole page: Streamlit scrolls inside its own container, not the document.
            page = browser.new_page(viewport={"width": 1400, "height": 2300})
            try:
                page.goto(stack.ui_url)
                page.get_by_text("API reachable").wait_for(timeout=60_000)
                assert page.get_by_role("button", name="Deploy").count() == 0  # minimal toolbar

                page.get_by_role("button", name="Try the sample").click()
                page.get_by_text("Uploaded sample_case.zip").wait_for(timeout=SLOW_MS)
                expect(page.get_by_role("button", name="Download the sample zip")).to_be_visible()

                page.get_by_role("button", name="Run the segmentation").click()
                # Progress while the API works, then the box closes with the total time.
                page.get_by_text("segmenting on the API…").first.wait_for(timeout=SLOW_MS)
                page.get_by_text("Agreement with the true mask").wait_for(timeout=SLOW_MS)
                expect(page.get_by_text("Segmented ").first).to_be_visible()
                dice_table = page.locator("table").filter(has_text="Dice")
                expect(dice_table).to_be_visible()
                expect(dice_table).to_contain_text("HD95 (mm)")
                for region in ("WT", "TC", "ET"):
                    expect(dice_table).to_contain_text(region)

                overlay = _image(page, "Overlay: prediction on FLAIR")
                expect(overlay).to_have_count(1, timeout=SLOW_MS)  # no lingering copy of a rerun
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

                # The size control: one image per row uses the page's width.
                small = _single_width(overlay)
                page.get_by_role("combobox", name="Images per row").click()
                page.get_by_role("option", name="1", exact=True).click()
                for _ in range(120):  # the images are drawn again, larger (the old ones linger during a rerun)
                    width = _single_width(overlay)
                    if width and width > 900:
                        break
                    page.wait_for_timeout(250)
                assert small and small < 400 and width and width > 900, (small, width)

                # The model switch: add the U-Net and compare both side by side, each with its Dice.
                sidebar = page.locator("[data-testid='stSidebar']")
                sidebar.get_by_role("combobox").last.click()
                page.get_by_role("option", name="U-Net (unet)").click()
                page.keyboard.press("Escape")
                page.get_by_role("button", name="Run the segmentation").click()
                page.get_by_text("Dice against the true mask").wait_for(timeout=SLOW_MS)
                dice_table = page.locator("table").filter(has_text="U-Net + SSPP").nth(1)
                for name in ("U-Net + SSPP", "U-Net", "WT", "TC", "ET"):
                    expect(dice_table).to_contain_text(name)
                for caption in ("Overlay: U-Net + SSPP on FLAIR", "Overlay: U-Net on FLAIR"):
                    expect(_image(page, caption)).to_be_visible()
                assert not page.locator("[data-testid='stException']").count()
            finally:
                SCREENSHOT.parent.mkdir(exist_ok=True)
                page.screenshot(path=str(SCREENSHOT), full_page=True)  # also on failure, to see what went wrong
                browser.close()
    finally:
        code = stack.stop()
    assert code == 0, stack.output()


@pytest.mark.slow
def test_streamlit_run_alone_has_the_minimal_toolbar(tmp_path):
    """``streamlit run streamlit_app/app.py`` without the demo's flags, from another folder: no Deploy button
    (the script folder's .streamlit/config.toml), and the page says the API is not there."""
    _require_browser()
    from playwright.sync_api import sync_playwright

    port = free_port()
    env = dict(os.environ, BRATS_API_URL=f"http://127.0.0.1:{free_port()}", PYTHONPATH=str(REPO_ROOT))
    command = [sys.executable, "-m", "streamlit", "run", str(REPO_ROOT / "streamlit_app" / "app.py"),
               "--server.headless", "true", "--server.port", str(port), "--server.address", "127.0.0.1"]  # fmt: skip
    server = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(240):
            try:
                if requests.get(f"{url}/_stcore/health", timeout=2).text == "ok":
                    break
            except requests.ConnectionError:
                pass
            assert server.poll() is None, "streamlit exited"
            time.sleep(0.5)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                page = browser.new_page()
                page.goto(url)
                page.get_by_text("API not available").wait_for(timeout=60_000)
                assert page.get_by_role("button", name="Deploy").count() == 0
                assert page.locator("[data-testid='stToolbar']").count() == 0
            finally:
                browser.close()
    finally:
        server.terminate()
        server.wait(30)


def test_a_missing_browser_fails_with_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setattr(sys.modules[__name__], "CHROMIUM", tmp_path / "no-chromium")
    with pytest.raises(pytest.fail.Exception, match="apt-get install chromium"):
        _require_browser()
