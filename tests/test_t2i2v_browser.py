"""Text -> image -> video in the app, in a real Chromium: the toggle shows for presets with FLUX, the
FLUX first frame appears beside the video, the video plays, the status says Done, and "reuse
settings" ticks the toggle again."""

import json
import re

import numpy as np
import pytest
from PIL import Image

from browser_pages import PLAYABLE, open_app
from studio_app import start_app

pytestmark = pytest.mark.browser

TOGGLE = "Text → image → video (FLUX)"


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    app = start_app(tmp_path_factory.mktemp("t2i2v-app"))  # tiny-random: a tiny random FLUX
    yield app
    app.stop()


@pytest.fixture(scope="module")
def page(browser, studio):
    page = open_app(browser, studio.url, height=1100)
    yield page
    page.close()


IMAGE_SHOWN = """() => { const img = document.querySelector('#tab-t2v .result-image img');
    return img !== null && img.complete && img.naturalWidth > 0; }"""


def test_toggle_draws_the_first_frame_shows_it_and_reuse_restores_it(page, studio, tmp_path):
    tab = page.locator("#tab-t2v")
    toggle = tab.get_by_label(TOGGLE)
    assert toggle.is_visible() and not toggle.is_checked()  # tiny-random offers it, off by default
    assert not tab.locator(".result-image").is_visible()
    assert not page.locator("#tab-i2v").get_by_label(TOGGLE).count()  # the image tab has its own image

    tab.locator(".prompt-box textarea").fill("a red fox running through fresh snow")
    toggle.check()
    tab.get_by_role("button", name="Generate").click()
    page.wait_for_function(PLAYABLE, arg="#tab-t2v .result-video video")
    page.wait_for_function(IMAGE_SHOWN)
    status = tab.locator(".generation-status [data-testid=markdown]").inner_text()
    assert "Done:" in status
    page.screenshot(path=str(tmp_path / "t2i2v.png"), full_page=True)

    video_name = re.search(r"\d{4}\.mp4", status).group(0)  # "Done: 1 video in ... · 0000.mp4"
    sidecar = json.loads((studio.output_dir / video_name).with_suffix(".json").read_text())
    assert sidecar["use_t2i2v"] and (studio.output_dir / sidecar["t2i2v_image"]).is_file()
    shown = page.evaluate("() => document.querySelector('#tab-t2v .result-image img').naturalWidth")
    assert shown == Image.open(studio.output_dir / sidecar["t2i2v_image"]).width
    assert np.asarray(Image.open(studio.output_dir / sidecar["t2i2v_image"])).std() > 0

    toggle.uncheck()
    page.get_by_role("tab", name="History").click()
    history = page.locator("#tab-history")
    history.locator(".history-gallery button[aria-label^='Thumbnail 1 ']").click()
    history.get_by_role("button", name="Reuse settings").click()
    page.wait_for_function("() => document.querySelector('#tab-t2v .prompt-box textarea')?.offsetParent !== null")
    assert page.locator("#tab-t2v").get_by_label(TOGGLE).is_checked()
