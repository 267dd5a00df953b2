"""The browser tests' Chromium: Debian's `chromium` driven by Playwright (never a downloaded build).

Test modules take the module-scoped `browser` fixture (tests/conftest.py) and open the app with
`open_app`; PLAYABLE is the page condition "this <video> can play"."""

import shutil
from contextlib import contextmanager

import pytest

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
PLAYABLE = """sel => { const v = document.querySelector(sel);
    return v !== null && v.readyState >= 3 && v.duration > 0 && v.videoWidth > 0; }"""


@contextmanager
def chromium():
    """A headless Chromium for one test module; the test is skipped where there is none."""
    if shutil.which("chromium") is None:
        pytest.skip("no `chromium` on PATH (.ci/run installs Debian's chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def open_app(browser, url: str, height: int = 1200, timeout_ms: int = 90_000):
    """A new page on the app at `url`, once its Text → Video prompt box is there."""
    page = browser.new_page(viewport={"width": 1400, "height": height})
    page.set_default_timeout(timeout_ms)
    page.goto(url)
    page.wait_for_selector("#tab-t2v .prompt-box textarea")
    return page


def set_number(scope, label: str, value) -> None:
    """Type `value` into the number box of the slider or number labelled `label`, as a user does."""
    box = scope.get_by_label(f"number input for {label}")
    box.fill(str(value))
    box.press("Enter")
