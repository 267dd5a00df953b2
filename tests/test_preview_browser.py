"""The live preview in a real Chromium (#31.2), on the demo preset: the result column's preview image
changes during a run before the video appears, goes when the video is there, and stays after Cancel."""


import pytest

from browser_pages import PLAYABLE, open_app, set_number
from studio_app import start_app

pytestmark = pytest.mark.browser

# Every 50 ms: each new preview image (its src) and whether the result video had a source yet.
RECORD_PREVIEWS = """() => {
    window.previewLog = [];
    setInterval(() => {
        const img = document.querySelector('#tab-t2v .result-preview img');
        const src = img && img.offsetParent !== null ? img.getAttribute('src') : null;
        const video = document.querySelector('#tab-t2v .result-video video');
        const last = window.previewLog[window.previewLog.length - 1];
        if (src && (!last || last.src !== src)) window.previewLog.push({src, video: !!(video && video.src)});
    }, 50);
}"""
PREVIEW_SHOWN = """() => { const img = document.querySelector('#tab-t2v .result-preview img');
    return img !== null && img.offsetParent !== null && !!img.getAttribute('src'); }"""


@pytest.fixture(scope="module")
def demo_app(tmp_path_factory):
    app = start_app(tmp_path_factory.mktemp("preview-app"), preset="demo")
    yield app
    app.stop()


@pytest.fixture
def page(browser, demo_app):
    page = open_app(browser, demo_app.url, height=1200, timeout_ms=120000)
    yield page
    page.close()


def test_preview_changes_during_the_run_before_the_video_and_stays_after_cancel(page):
    tab = page.locator("#tab-t2v")
    status = tab.locator(".generation-status [data-testid=markdown]")
    tab.locator(".prompt-box textarea").fill("a green triangle moving right on a black background")
    set_number(tab, "Frames", 17)
    set_number(tab, "Steps", 20)  # a preview after every 2nd step
    page.evaluate(RECORD_PREVIEWS)
    tab.get_by_role("button", name="Generate").click()
    status.get_by_text("Done").wait_for()
    page.wait_for_function(PLAYABLE, arg="#tab-t2v .result-video video")
    log = page.evaluate("() => window.previewLog")
    before_video = [entry["src"] for entry in log if not entry["video"]]
    assert len(set(before_video)) >= 2, log
    page.wait_for_function(f"() => !({PREVIEW_SHOWN})()")  # the video took its place

    set_number(tab, "Steps", 200)
    tab.get_by_role("button", name="Generate").click()
    page.wait_for_function(PREVIEW_SHOWN)
    tab.get_by_role("button", name="Cancel").click()
    status.get_by_text("Cancelled").wait_for()
    last = page.evaluate("() => document.querySelector('#tab-t2v .result-preview img').getAttribute('src')")
    page.wait_for_timeout(2000)  # nothing takes it away afterwards
    assert page.evaluate(PREVIEW_SHOWN)
    assert page.evaluate("() => document.querySelector('#tab-t2v .result-preview img').getAttribute('src')") == last
