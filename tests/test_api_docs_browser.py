"""``/docs`` and ``/redoc`` render in headless Chromium with every request to another host blocked (offline).

Needs Debian's ``chromium`` at /usr/bin/chromium, like ``test_streamlit_browser.py``: it fails, never skips,
when the browser is missing.
"""

from __future__ import annotations

import pytest
from test_streamlit_browser import CHROMIUM, CHROMIUM_ARGS, _require_browser


@pytest.mark.slow
def test_swagger_ui_and_redoc_render_offline(server_factory) -> None:
    _require_browser()
    from playwright.sync_api import expect, sync_playwright

    server = server_factory()
    outside: list[str] = []

    def only_the_server(route) -> None:
        if route.request.url.startswith(server.url + "/"):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.route("**/*", only_the_server)
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))

            page.goto(server.url + "/docs")
            expect(page.locator(".opblock").first).to_be_visible(timeout=60_000)
            assert page.locator(".opblock").count() >= 8
            expect(page.get_by_text("Upload one .zip or the NIfTI files of a case")).to_be_visible()
            expect(page.get_by_role("button", name="Authorize")).to_be_visible()

            page.goto(server.url + "/redoc")
            expect(page.get_by_text("Segment one case", exact=False).first).to_be_visible(timeout=60_000)
            expect(page.locator("h1").first).to_contain_text("BraTS U-Net + SSPP segmentation API")
            assert errors == [], errors
        finally:
            browser.close()
    assert outside == [], f"the docs pages asked other hosts for {outside}"
