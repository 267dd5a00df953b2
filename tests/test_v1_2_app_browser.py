"""The app on the Open-Sora 1.2 family (`launch.py --preset tiny-random-v1-2`) in a real browser
(Debian's Chromium, Playwright): the T2V and I2V tabs generate, the video plays, the status says Done."""

import json
import re

import av
import numpy as np
import pytest
from PIL import Image

from browser_pages import PLAYABLE, open_app
from studio_app import start_app

TINY = "tiny-random-v1-2"


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    app = start_app(tmp_path_factory.mktemp("studio-v1-2"), preset=TINY)
    yield app
    app.stop()


@pytest.fixture(scope="module")
def page(browser, studio):
    page = open_app(browser, studio.url, height=1100)
    yield page
    page.close()


def video_frames(path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def newest_sidecar(studio, status: str) -> tuple[dict, int]:
    name = re.search(r"\d{4}\.mp4", status).group()  # "Done: 1 video in 2.0 s · seed 7 · 0000.mp4"
    mp4 = studio.output_dir / name
    return json.loads(mp4.with_suffix(".json").read_text()), video_frames(mp4)


def generate_and_wait(page, tab_id: str) -> str:
    tab = page.locator(f"#{tab_id}")
    tab.get_by_role("button", name="Generate").click()
    page.wait_for_function(PLAYABLE, arg=f"#{tab_id} .result-video video")
    status = tab.locator(".generation-status [data-testid=markdown]")
    status.get_by_text("Done:").wait_for()
    return status.inner_text()


@pytest.mark.browser
def test_t2v_tab_generates_with_the_v1_2_preset_and_the_picker_names_the_family(page, studio, tmp_path):
    tab = page.locator("#tab-t2v")
    assert tab.get_by_label("Model preset").input_value() == f"{TINY} (Open-Sora 1.2)"
    assert "(Open-Sora 1.2)" in page.locator(".model-banner [data-testid=markdown]").inner_text()
    frames = tab.get_by_label("number input for Frames")
    frames.fill("34")  # not 4k+1: a 1.2 count, kept as typed
    frames.press("Enter")
    tab.locator(".prompt-box textarea").fill("a cat on a roof")
    status = generate_and_wait(page, "tab-t2v")
    page.screenshot(path=str(tmp_path / "v1-2-t2v.png"), full_page=True)
    sidecar, count = newest_sidecar(studio, status)
    assert count == 34 and sidecar["num_frames"] == 34
    assert sidecar["family"] == "opensora-v1.2" and sidecar["cond_type"] == "t2v" and sidecar["mask_strategy"] == ""
    assert sidecar["model_prompt"] == "a cat on a roof aesthetic score: 6.5."


@pytest.mark.browser
def test_i2v_tab_generates_from_an_image_with_the_v1_2_preset(page, studio, tmp_path):
    image = tmp_path / "first.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (72, 120, 3), dtype=np.uint8)).save(image)
    page.get_by_role("tab", name="Image → Video").click()
    tab = page.locator("#tab-i2v")
    assert not tab.get_by_label("Image guidance").is_visible()  # 1.2 has no image guidance
    tab.get_by_label("Conditioning").click()  # 1.2 keeps 17 frames of a video to extend, and has no "long" types
    options = page.get_by_role("option").all_inner_texts()
    assert "Extend a video, head: keep its first 17 frames, continue after them" in options
    assert not any("33" in o or "65" in o or "(long)" in o for o in options), options
    page.get_by_role("option", name="First frame: the video starts on the image").click()
    tab.locator(".reference-image input[type=file]").set_input_files(str(image))
    tab.locator(".reference-image img").first.wait_for()
    tab.locator(".prompt-box textarea").fill("it rolls away")
    status = generate_and_wait(page, "tab-i2v")
    page.screenshot(path=str(tmp_path / "v1-2-i2v.png"), full_page=True)
    sidecar, count = newest_sidecar(studio, status)
    assert count == 17 and sidecar["cond_type"] == "i2v_head" and sidecar["mask_strategy"] == "0"
    assert sidecar["family"] == "opensora-v1.2" and sidecar["guidance_img"] is None
