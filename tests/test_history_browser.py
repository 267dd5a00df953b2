"""Issue #31 items 5 and 6 in a real Chromium: an mp4 dropped on a video tab fills the form from the
settings inside it; History pages, searches, deletes (and the video is gone), sends a video's last
frame to Image → Video, and extends a video. One app on tiny-random for the module; its output folder
starts with 30 videos written by the same writer the app uses."""

import json
import re
import shutil

import numpy as np
import pytest

from browser_pages import open_app
from studio_app import start_app

pytestmark = pytest.mark.browser
VIDEOS = 30  # more than one page of 24
ZEBRAS = (3, 17)  # the only prompts with "zebra"
LONG = VIDEOS - 1  # the one 33-frame video (extendable)


def write_videos(folder, count: int) -> None:
    from opensora.generation_settings import GenerationRequest, resolve_settings
    from opensora.io.outputs import OutputWriter
    from opensora.presets import load_preset

    tiny, writer = load_preset("tiny-random"), OutputWriter(folder)
    for i in range(count):
        prompt = f"a zebra number {i}" if i in ZEBRAS else f"a cat number {i}"
        request = GenerationRequest(prompt=prompt, seed=100 + i, num_steps=2, num_frames=33 if i == LONG else 9)
        settings = resolve_settings(request, tiny).to_dict()
        frames = np.zeros((settings["num_frames"], 32, 64, 3), np.uint8)
        frames[..., 0] = 8 * i  # each video its own colour
        frames[-1, ..., 1] = 200  # and a green last frame
        writer.write(frames, 8, settings, text=prompt, seed=settings["seed"])


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("history-app")
    write_videos(tmp / "outputs", VIDEOS)
    app = start_app(tmp)
    yield app
    app.stop()


@pytest.fixture
def page(browser, studio):
    page = open_app(browser, studio.url, height=1200)
    yield page
    page.close()


def markdown(scope, css: str):
    return scope.locator(f"{css} [data-testid=markdown]")


def open_history(page):
    page.get_by_role("tab", name="History").click()
    history = page.locator("#tab-history")
    markdown(history, ".history-page").get_by_text("Page 1 of").wait_for()
    return history


def select(history, caption: str) -> None:
    """Click the gallery thumbnail whose caption starts with `caption` (e.g. "#0017")."""
    history.locator(".history-gallery .thumbnail-item", has_text=caption).first.click()
    markdown(history, ".history-info").get_by_text(caption).wait_for()


def test_dropping_an_mp4_fills_the_form_with_its_settings(page, studio, tmp_path):
    """The mp4 alone (copied away from its sidecar) carries its settings."""
    from opensora.generation_settings import GenerationRequest, resolve_settings
    from opensora.io.outputs import OutputWriter
    from opensora.presets import load_preset

    request = GenerationRequest(prompt="a dropped cat on a red sofa", seed=4321, num_steps=7, num_frames=13,
                                aspect_ratio="1:1", guidance=5.5, negative_prompt="blurry")
    settings = resolve_settings(request, load_preset("tiny-random")).to_dict()
    made = OutputWriter(tmp_path / "elsewhere").write(np.zeros((13, 48, 48, 3), np.uint8), 8, settings,
                                                      text=request.prompt, seed=4321)
    shared = tmp_path / "shared.mp4"
    shutil.copy(made, shared)

    tab = page.locator("#tab-t2v")
    tab.locator(".settings-drop input[type=file]").set_input_files(str(shared))
    prompt = tab.locator(".prompt-box textarea")
    page.wait_for_function("() => document.querySelector('#tab-t2v .prompt-box textarea').value"
                           " === 'a dropped cat on a red sofa'")
    assert prompt.input_value() == "a dropped cat on a red sofa"
    assert tab.get_by_label("Negative prompt").input_value() == "blurry"
    assert tab.get_by_label("Seed", exact=True).input_value() == "4321"
    assert tab.get_by_label("number input for Steps").input_value() == "7"
    assert tab.get_by_label("number input for Frames").input_value() == "13"
    assert tab.get_by_label("number input for Text guidance").input_value() == "5.5"
    assert tab.get_by_label("Aspect ratio").input_value() == "1:1"

    from PIL import Image  # a sidecar of an image-to-video: the Image -> Video tab opens, filled

    image = tmp_path / "start.png"
    Image.fromarray(np.full((48, 64, 3), 90, np.uint8)).save(image)
    i2v = resolve_settings(GenerationRequest(prompt="the ball rolls left", seed=77, num_steps=3, cond_type="i2v_head",
                                             reference=[str(image)]), load_preset("tiny-random")).to_dict()
    (tmp_path / "0012.json").write_text(json.dumps(i2v))
    tab.locator(".settings-drop input[type=file]").set_input_files(str(tmp_path / "0012.json"))
    page.wait_for_function("() => document.querySelector('#tab-i2v .prompt-box textarea')?.value"
                           " === 'the ball rolls left'")
    i2v_tab = page.locator("#tab-i2v")
    assert i2v_tab.get_by_label("Seed", exact=True).input_value() == "77"
    assert i2v_tab.get_by_label("Conditioning").input_value() == "First frame: the video starts on the image"
    i2v_tab.locator(".reference-image img").first.wait_for()
    page.get_by_role("tab", name="Text → Video").click()

    plain = tmp_path / "plain.mp4"  # a video from elsewhere: a message, the form kept
    from opensora.io.video import write_video

    write_video(plain, np.zeros((3, 16, 16, 3), np.uint8), 8)
    tab.locator(".settings-drop input[type=file]").set_input_files(str(plain))
    page.locator(".toast-body").filter(has_text="plain.mp4 carries no Open-Sora Studio settings").first.wait_for()
    assert prompt.input_value() == "a dropped cat on a red sofa"


def test_history_pages_and_search(page):
    history = open_history(page)
    label = markdown(history, ".history-page")
    assert label.inner_text() == f"Page 1 of 2 · {VIDEOS} videos"
    thumbs = history.locator(".history-gallery .thumbnail-item")
    assert thumbs.count() == 24
    history.get_by_role("button", name="Older →").click()
    label.get_by_text("Page 2 of 2").wait_for()
    page.wait_for_function("() => document.querySelectorAll('#tab-history .history-gallery .thumbnail-item')"
                           ".length === 6")
    assert "#0000" in history.locator(".history-gallery").inner_text()
    assert history.get_by_role("button", name="Older →").is_disabled()
    search = history.locator(".history-search textarea, .history-search input").first
    search.fill("ZEBRA number")
    search.press("Enter")
    label.get_by_text(f"2 of {VIDEOS} videos match “ZEBRA number”").wait_for()
    gallery_text = history.locator(".history-gallery").inner_text()
    assert "#0017" in gallery_text and "#0003" in gallery_text and "cat" not in gallery_text


def test_delete_from_history_and_it_is_gone(page, studio):
    victim = 20
    history = open_history(page)
    select(history, f"#{victim:04d}")
    delete = history.locator(".history-delete")
    delete.click()
    markdown(history, ".history-info").get_by_text("Click Delete again").wait_for()
    assert (studio.output_dir / f"{victim:04d}.mp4").exists()  # the first click only asks
    delete.click()
    markdown(history, ".history-info").get_by_text(f"Deleted #{victim:04d}").wait_for()
    page.wait_for_function(f"() => !document.querySelector('#tab-history .history-gallery').innerText"
                           f".includes('#{victim:04d}')")
    assert not (studio.output_dir / f"{victim:04d}.mp4").exists()
    assert not (studio.output_dir / f"{victim:04d}.json").exists()
    rows = (studio.output_dir / "results.csv").read_text().splitlines()
    assert not any(r.startswith(f"{victim},") for r in rows) and any(r.startswith(f"{victim - 1},") for r in rows)
    assert markdown(history, ".history-page").inner_text() == f"Page 1 of 2 · {VIDEOS - 1} videos"
    page.reload()  # read back from the folder: still gone
    history = open_history(page)
    markdown(history, ".history-page").get_by_text(f"{VIDEOS - 1} videos").wait_for()  # the page's own reload
    assert f"#{victim:04d}" not in history.locator(".history-gallery").inner_text()


def test_send_to_i2v_uses_the_last_frame_as_the_reference(page, studio):
    from PIL import Image

    history = open_history(page)
    select(history, "#0017")
    history.get_by_role("button", name="Send to I2V").click()
    tab = page.locator("#tab-i2v")
    page.wait_for_function("() => document.querySelector('#tab-i2v .prompt-box textarea')?.value"
                           " === 'a zebra number 17'")
    tab.locator(".reference-image img").first.wait_for()
    assert tab.get_by_label("Conditioning").input_value() == "First frame: the video starts on the image"
    saved = list((studio.output_dir / "references").glob("*.png"))
    assert len(saved) == 1
    pixels = np.asarray(Image.open(saved[0]).convert("RGB")).astype(int)
    assert abs(pixels[..., 1].mean() - 200) < 12 and abs(pixels[..., 0].mean() - 8 * 17) < 12  # the last frame


def test_extend_from_history_makes_one_longer_video(page, studio):
    history = open_history(page)
    select(history, f"#{LONG:04d}")
    history.get_by_text("Extend this video").click()
    seconds = history.locator(".extend-seconds input")
    # The selection sets the default length (the video's own); typing before it lands would be overwritten.
    page.wait_for_function("() => (document.querySelector('#tab-history .extend-seconds input')?.value ?? '') !== ''")
    for _ in range(10):  # typed again if the selection's default (the video's own length) landed after it
        seconds.fill("4.625")  # 37 frames at tiny-random's 8 fps: one short part of 37 (4 new frames)
        seconds.press("Tab")
        page.wait_for_timeout(1000)
        if seconds.input_value() == "4.625":
            break
    assert seconds.input_value() == "4.625"
    history.locator(".extend-button").click()
    status = markdown(history, ".extend-status")
    # Done, or an error toast: either way the assertion below says what the page said.
    page.wait_for_function("() => document.querySelector('#tab-history .extend-status').innerText.includes('→')"
                           " || document.querySelector('.toast-body') !== null", timeout=240_000)
    toasts = page.locator(".toast-body").all_inner_texts()
    assert "33 → 37 frames" in status.inner_text(), (status.inner_text(), toasts)
    name = re.search(r"\d{4}\.mp4", status.inner_text()).group(0)
    sidecar = json.loads((studio.output_dir / name).with_suffix(".json").read_text())
    assert sidecar["prompt"] == f"a cat number {LONG}" and sidecar["num_steps"] == 2  # the source's own settings
    assert [p["num_frames"] for p in sidecar["extension"]["parts"]] == [37]
    page.wait_for_function(f"() => document.querySelector('#tab-history .history-gallery').innerText"
                           f".includes('{name[:4]} · v2v_head · extended')")
