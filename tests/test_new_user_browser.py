"""The video tabs as a new user meets them, on the demo preset, in a real Chromium (issue #29):
per-preset frame limits, the aspect ratio following the image, one seed per video, the LoRA
picker per preset, references kept beside the videos, and the status lines."""

import json

import av
import numpy as np
import pytest
import torch
from PIL import Image

from browser_pages import PLAYABLE, open_app, set_number
from studio_app import start_app

pytestmark = pytest.mark.browser


def _lora(path, preset: str, hidden: int):
    from opensora.lora import write_lora_file

    pairs = {"transformer_blocks.0.attn.to_q": (torch.zeros(2, hidden), torch.zeros(hidden, 2))}
    write_lora_file(path, pairs, rank=2, alpha=2.0, target_modules=["to_q"], preset=preset)


@pytest.fixture(scope="module")
def demo_app(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("demo-app")
    _lora(tmp / "runs" / "demo-style" / "lora.safetensors", "demo", 192)
    _lora(tmp / "runs" / "tiny-style" / "lora.safetensors", "tiny-random", 64)
    app = start_app(tmp, preset="demo")
    yield app
    app.stop()


@pytest.fixture
def page(browser, demo_app):
    page = open_app(browser, demo_app.url, height=1200)
    yield page
    page.close()


def frames_of(path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def newest_sidecars(app, count: int) -> list[dict]:
    paths = sorted(app.output_dir.glob("[0-9]*.json"))[-count:]
    return [json.loads(p.read_text()) for p in paths]


def test_demo_form_limits_placeholder_and_refine_default(page):
    """#29.8: the demo's frame limit and trained length come from its preset; 30 is refused at once.
    Placeholders follow the preset; the refine tab uses the demo vocabulary while the demo runs."""
    tab = page.locator("#tab-t2v")
    prompt = tab.locator(".prompt-box textarea")
    assert prompt.get_attribute("placeholder") == "a green triangle moving right on a black background"
    frames = tab.get_by_label("number input for Frames")
    assert frames.get_attribute("max") == "65"
    set_number(tab, "Frames", 30)
    page.locator(".toast-body").filter(has_text="30 frames is not allowed").first.wait_for()
    page.wait_for_function("() => ['29', '33'].includes(document.querySelector("
                           "'#tab-t2v input[aria-label=\"number input for Frames\"]').value)")
    set_number(tab, "Frames", 41)
    tab.locator(".frames-note").first.get_by_text("past the 33").wait_for()
    set_number(tab, "Frames", 33)
    page.wait_for_function("() => !document.querySelector('#tab-t2v .frames-note').innerText.includes('past')")
    assert not tab.get_by_label("Seed", exact=True).is_visible()  # "random" is ticked: no seed shown
    page.get_by_role("tab", name="Prompt refinement").click()
    assert page.locator("#tab-refine").get_by_label("Demo model vocabulary (shapes world)").is_checked()


def test_lora_picker_offers_only_loras_of_the_preset(page):
    """#29.12: the tiny-random LoRA is not offered under demo."""
    tab = page.locator("#tab-t2v")
    tab.get_by_label("LoRA", exact=True).click()
    page.get_by_role("option", name="demo-style (demo)").wait_for()
    options = page.get_by_role("option").all_inner_texts()
    assert not any("tiny-style" in o for o in options), options


def test_i2v_aspect_follows_a_wide_image_and_the_crop_is_said(page, demo_app, tmp_path):
    """#29.11 + #29.13: a 16:9 image gives the 16:9 bucket (not a 1:1 crop); the reference is kept
    in the output folder and the sidecar points there."""
    image = tmp_path / "wide.png"
    pixels = np.zeros((180, 320, 3), np.uint8)
    pixels[60:120, 40:100] = (40, 200, 40)
    Image.fromarray(pixels).save(image)
    page.get_by_role("tab", name="Image → Video").click()
    tab = page.locator("#tab-i2v")
    tab.locator(".reference-image input[type=file]").set_input_files(str(image))
    tab.locator(".reference-image img").first.wait_for()
    tab.locator(".prompt-box textarea").fill("a green square moving right on a black background")
    set_number(tab, "Steps", 4)
    tab.get_by_role("button", name="Generate").click()
    page.wait_for_function(PLAYABLE, arg="#tab-i2v .result-video video")
    size = page.evaluate("() => { const v = document.querySelector('#tab-i2v .result-video video');"
                         " return [v.videoWidth, v.videoHeight]; }")
    assert size == [160, 96]
    status = tab.locator(".generation-status [data-testid=markdown]").inner_text()
    assert "wide.png (320x180) is scaled and centre-cropped to 160x96 (16:9)" in status
    sidecar = newest_sidecars(demo_app, 1)[0]
    assert sidecar["aspect_ratio"] == "16:9" and (sidecar["width"], sidecar["height"]) == (160, 96)
    kept = sidecar["reference"][0]
    assert kept.startswith(str(demo_app.output_dir / "references")) and open(kept, "rb").read() == image.read_bytes()


def test_reuse_of_the_second_sample_remakes_it_and_status_lines_follow_the_run(page, demo_app, tmp_path):
    """#29.6: sample 2's seed is shown the same everywhere and Reuse remakes it exactly. The last
    run's Done line goes when a new run starts; Cancel says so at once."""
    tab = page.locator("#tab-t2v")
    tab.locator(".prompt-box textarea").fill("a red circle moving up on a gray background")
    set_number(tab, "Steps", 4)
    set_number(tab, "Samples", 2)
    tab.get_by_label("Random seed").uncheck()
    tab.get_by_label("Seed", exact=True).fill("7")
    tab.get_by_role("button", name="Generate").click()
    status = tab.locator(".generation-status [data-testid=markdown]")
    status.get_by_text("seeds 7, 8").wait_for()
    first, second = newest_sidecars(demo_app, 2)
    assert (first["seed"], second["seed"]) == (7, 8)
    rows = (demo_app.output_dir / "results.csv").read_text().splitlines()[-2:]
    assert [r.split(",")[-2] for r in rows] == ["7", "8"]
    second_video = sorted(demo_app.output_dir.glob("[0-9]*.mp4"))[-1]
    page.screenshot(path=str(tmp_path / "t2v-after-run.png"), full_page=True)

    page.get_by_role("tab", name="History").click()
    history = page.locator("#tab-history")
    history.locator(".history-gallery button[aria-label^='Thumbnail 1 ']").click()
    history.get_by_text("seed 8").wait_for()
    history.get_by_role("button", name="Reuse settings").click()
    page.wait_for_function("() => document.querySelector('#tab-t2v .prompt-box textarea')?.offsetParent !== null")
    assert tab.get_by_label("Seed", exact=True).input_value() == "8"
    assert tab.get_by_label("number input for Samples").input_value() == "1"
    tab.get_by_role("button", name="Generate").click()
    page.wait_for_function("() => !document.querySelector('#tab-t2v .generation-status').innerText.includes('Done')")
    status.get_by_text("seed 8").wait_for()
    remade = sorted(demo_app.output_dir.glob("[0-9]*.mp4"))[-1]
    assert remade != second_video and np.array_equal(frames_of(remade), frames_of(second_video))

    set_number(tab, "Steps", 200)
    tab.get_by_role("button", name="Generate").click()
    tab.get_by_text("/200 · ETA").first.wait_for()
    tab.get_by_role("button", name="Cancel").click()
    tab.locator(".cancel-note [data-testid=markdown]").get_by_text("Cancelling").wait_for()
    status.get_by_text("Cancelled").wait_for()


def test_a_second_click_during_a_run_is_queued_not_dropped(page, demo_app):
    """#29 (confusing): a second Generate while one's own job runs makes a second video."""
    before = len(list(demo_app.output_dir.glob("[0-9]*.mp4")))
    tab = page.locator("#tab-t2v")
    tab.locator(".prompt-box textarea").fill("a blue triangle moving left on a black background")
    set_number(tab, "Steps", 12)
    button = tab.get_by_role("button", name="Generate")
    button.click()
    tab.get_by_text("/12 · ETA").first.wait_for()
    button.click()
    deadline_ms = 120_000
    page.wait_for_function(f"() => document.querySelector('#tab-t2v .generation-status').innerText"
                           f".includes('{before + 1:04d}.mp4')", timeout=deadline_ms)
    assert len(list(demo_app.output_dir.glob("[0-9]*.mp4"))) == before + 2
