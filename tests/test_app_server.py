"""The app as users get it: `python launch.py` in a subprocess, driven through its named API
endpoints with gradio_client, and through a real browser (Debian's Chromium, Playwright)."""

import json
import time
from pathlib import Path

import av
import httpx
import numpy as np
import pytest
from PIL import Image

from browser_pages import PLAYABLE, open_app
from studio_app import REPO, start_app


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    app = start_app(tmp_path_factory.mktemp("studio"))
    yield app
    app.stop()


@pytest.fixture(scope="module")
def client(studio, tmp_path_factory):
    from gradio_client import Client

    return Client(studio.url, verbose=False, download_files=str(tmp_path_factory.mktemp("downloads")))


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for name in ("first.png", "last.png"):
        Image.fromarray(rng.integers(0, 255, (72, 120, 3), dtype=np.uint8)).save(folder / name)
    (folder / "broken.png").write_text("this is not a PNG")
    return folder


def frame_count(path) -> tuple[int, int, int]:
    """(decoded frames, height, width) of an mp4."""
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    return len(frames), frames[0].shape[0], frames[0].shape[1]


def sidecar_of(studio, video_name: str) -> dict:
    return json.loads((studio.output_dir / Path(video_name).with_suffix(".json").name).read_text())


def t2v(client, **kwargs):
    settings = dict(prompt="a red ball bouncing on a wooden floor", num_frames=9, num_steps=3, random_seed=False,
                    seed=1)
    return client.predict(**{**settings, **kwargs}, api_name="/generate-t2v")


# ------------------------------------------------------------------------------ API
def test_app_starts_and_prints_its_url(studio):
    assert studio.url.startswith("http://127.0.0.1:")
    print(f"launch.py printed its URL after {studio.startup_s:.1f} s")
    assert studio.startup_s < 90


def test_t2v_endpoint_returns_an_mp4_with_the_requested_frames(client, studio):
    video, samples, status, seed = t2v(client, num_frames=13, aspect_ratio="1:1", seed=11)
    assert frame_count(video) == (13, 48, 48)
    assert seed == 11 and "seed 11" in status
    sidecar = sidecar_of(studio, status.split("`")[1])
    assert sidecar["num_frames"] == 13 and sidecar["seed"] == 11 and sidecar["cond_type"] == "t2v"
    assert sidecar["prompt"] == "a red ball bouncing on a wooden floor"
    assert sidecar["prompt_handling"]["motion_score"] == 4


def test_random_seed_is_reported_and_several_samples_come_back(client, studio):
    video, samples, status, seed = t2v(client, random_seed=True, num_samples=2, num_frames=5)
    assert isinstance(seed, int) and f"seeds {seed}, {seed + 1}" in status
    assert len(samples) == 2 and all(frame_count(s["video"])[0] == 5 for s in samples)
    names = [part for part in status.split("`") if part.endswith(".mp4")]
    assert [sidecar_of(studio, n)["seed"] for n in names] == [seed, seed + 1]


def test_i2v_endpoint_first_frame_and_loop(client, images):
    video, _, status, _ = client.predict(
        prompt="the ball rolls away", reference_image=_file(images / "first.png"), cond_type="i2v_head",
        end_image=None, reference_video=None, num_frames=17, num_steps=3, api_name="/generate-i2v")
    assert frame_count(video)[0] == 17
    video, _, _, _ = client.predict(
        prompt="a loop", reference_image=_file(images / "first.png"), cond_type="i2v_loop",
        end_image=_file(images / "last.png"), reference_video=None, num_frames=9, num_steps=2,
        aspect_ratio="4:3", api_name="/generate-i2v")
    assert frame_count(video) == (9, 48, 64)


def test_refine_endpoint_offline(client):
    before, after, motion, notes = client.predict(prompt="a cat on a roof", image=None, mode="t2v",
                                                  motion_score="6", shapes_world=False, api_name="/refine")
    assert before == "a cat on a roof"
    assert after.startswith("a cat on a roof") and len(after) > len(before)
    assert motion == "6 (fixed)" and "offline" in notes


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_frames=10), "4k\\+1 frames"),
    (dict(prompt="   "), "prompt is empty"),
    (dict(preset="opensora-v2-256px"), "not in the list of choices"),  # only presets with files
    (dict(guidance=80.0), "greater than maximum value 20"),  # the slider range
])
def test_bad_settings_are_messages_and_the_app_keeps_serving(client, kwargs, message):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match=message):
        t2v(client, **kwargs)
    video, _, _, _ = t2v(client, num_frames=5, num_steps=1)
    assert frame_count(video)[0] == 5


def test_bad_or_missing_image_is_a_message(client, images):
    from gradio_client.exceptions import AppError

    common = dict(prompt="x", cond_type="i2v_head", end_image=None, reference_video=None, num_frames=5,
                  num_steps=1, api_name="/generate-i2v")
    with pytest.raises(AppError, match="needs a reference image"):
        client.predict(reference_image=None, **common)
    with pytest.raises(AppError, match="broken.png is not a readable image"):  # #29.7: no Gradio internals
        client.predict(reference_image=_file(images / "broken.png"), **common)
    assert frame_count(client.predict(reference_image=_file(images / "first.png"), **common)[0])[0] == 5


def test_user_errors_are_one_log_line_not_tracebacks(client, studio):
    """#29.10: an empty prompt or a missing image is one line in the app's log."""
    from gradio_client.exceptions import AppError

    before = len(studio.log())
    for kwargs in (dict(prompt=""), dict(num_frames=10)):
        with pytest.raises(AppError):
            t2v(client, **kwargs)
    time.sleep(0.5)
    log = studio.log()[before:]
    assert "Traceback" not in log
    refused = [line for line in log.splitlines() if "generation refused" in line]
    assert any("prompt is empty" in line for line in refused) and any("num_frames 10" in line for line in refused)


def test_queue_position_progress_eta_and_cancel(studio, tmp_path):
    """User A runs a long job; user B waits in the queue and is told its position; A's Cancel
    stops A's job between steps; B's job then runs."""
    from gradio_client import Client

    a = Client(studio.url, verbose=False, download_files=str(tmp_path / "a"))
    b = Client(studio.url, verbose=False, download_files=str(tmp_path / "b"))
    long_job = a.submit(prompt="a long one", num_frames=129, num_steps=200, api_name="/generate-t2v")
    progress = _wait(lambda: _progress_desc(long_job), "step progress of the long job")
    assert "/200 · ETA " in progress
    queued = b.submit(prompt="a short one", num_frames=5, num_steps=1, api_name="/generate-t2v")
    position = _wait(lambda: (d := _any_desc(queued)) and "queued: position" in d and d, "queue position")
    assert position.startswith("queued: position 1 of 2")  # first in line behind the running job
    assert "Cancelling" in a.predict(api_name="/cancel")
    video, _, message, _ = long_job.result(timeout=120)
    assert video is None and "Cancelled" in message and "of 200" in message
    assert frame_count(queued.result(timeout=120)[0])[0] == 5


def test_serves_files_only_from_output_and_temp_dirs(studio, client):
    t2v(client, num_frames=1, num_steps=1)
    base = studio.url.rstrip("/")
    newest = sorted(studio.output_dir.glob("*.mp4"))[-1]
    assert httpx.get(f"{base}/gradio_api/file={newest}").status_code == 200
    for path in (REPO / "launch.py", Path("/etc/passwd"), REPO / "presets" / "tiny-random.toml"):
        assert httpx.get(f"{base}/gradio_api/file={path}").status_code in (403, 404), path


# ------------------------------------------------------------------------------ browser
@pytest.fixture
def page(browser, studio):
    page = open_app(browser, studio.url, height=1100)
    yield page
    page.close()


@pytest.mark.browser
def test_browser_generate_play_switch_tabs_reuse_and_screenshot(page, tmp_path):
    t2v_tab = page.locator("#tab-t2v")
    t2v_tab.locator(".prompt-box textarea").fill("a red ball bouncing on a wooden floor")
    t2v_tab.get_by_role("button", name="Generate").click()
    page.wait_for_function(PLAYABLE, arg="#tab-t2v .result-video video")
    status = t2v_tab.locator(".generation-status [data-testid=markdown]")
    assert "Done:" in status.inner_text()
    seed = int(t2v_tab.get_by_label("Seed used").input_value())  # the random seed used is shown
    assert f"seed {seed}" in status.inner_text()
    assert not t2v_tab.get_by_label("Seed", exact=True).is_visible()  # no seed box while "random" is ticked
    page.screenshot(path=str(tmp_path / "t2v.png"), full_page=True)

    page.get_by_role("tab", name="Image → Video").click()
    i2v_tab = page.locator("#tab-i2v")
    i2v_tab.get_by_text("Reference image").first.wait_for()
    i2v_tab.locator(".prompt-box textarea").fill("it rolls away")
    i2v_tab.get_by_role("button", name="Generate").click()  # no image uploaded: an error message
    toast = page.locator(".toast-body").filter(has_text="needs a reference image")
    toast.first.wait_for()
    page.screenshot(path=str(tmp_path / "i2v-error.png"))

    page.get_by_role("tab", name="Prompt refinement").click()
    refine_tab = page.locator("#tab-refine")
    refine_tab.get_by_label("Your idea").fill("a cat on a roof")
    refine_tab.get_by_role("button", name="Refine", exact=True).click()
    page.wait_for_function("() => document.querySelector('#tab-refine .refined-prompt textarea')?.value.length > 20")
    refined = refine_tab.locator(".refined-prompt textarea").input_value()
    assert refine_tab.get_by_label("Before").input_value() == "a cat on a roof"
    refine_tab.get_by_role("button", name="Send to Text → Video").click()
    page.wait_for_function("() => document.querySelector('#tab-t2v .prompt-box textarea')?.offsetParent !== null")
    assert page.locator("#tab-t2v .prompt-box textarea").input_value() == refined

    page.get_by_role("tab", name="History").click()
    history = page.locator("#tab-history")
    history.locator(".history-gallery button[aria-label^='Thumbnail 1 ']").click()
    history.get_by_role("button", name="Reuse settings").click()
    page.wait_for_function(
        "() => document.querySelector('#tab-t2v .prompt-box textarea')?.offsetParent !== null")
    assert page.locator("#tab-t2v .prompt-box textarea").input_value() == "a red ball bouncing on a wooden floor"
    assert page.locator("#tab-t2v").get_by_label("Seed", exact=True).input_value() == str(seed)
    assert not page.locator("#tab-t2v").get_by_label("Random seed").is_checked()


@pytest.mark.browser
def test_browser_progress_and_cancel(page, tmp_path):
    tab = page.locator("#tab-t2v")
    tab.locator(".prompt-box textarea").fill("a very long video")
    tab.get_by_label("number input for Steps").fill("200")
    tab.get_by_label("number input for Frames").fill("129")
    tab.get_by_label("number input for Frames").press("Enter")
    tab.get_by_role("button", name="Generate").click()
    tab.get_by_text("/200 · ETA").first.wait_for()  # progress with step count and ETA
    page.screenshot(path=str(tmp_path / "progress.png"))
    tab.get_by_role("button", name="Cancel").click()
    tab.locator(".generation-status").get_by_text("Cancelled").wait_for()
    assert "of 200" in tab.locator(".generation-status [data-testid=markdown]").inner_text()


@pytest.mark.browser
def test_browser_finetune_runs_to_the_end_and_its_lora_is_pickable(page, studio, tmp_path):
    """Start a LoRA fine-tune on tiny-random from the tab (dataset: a folder of videos + captions),
    wait for it to finish, pick the LoRA in the Text → Video tab and generate with it."""
    pytest.importorskip("training.commands.finetune")
    from training.demo.shapes_dataset import write_dataset

    # Inside the runs folder: the tab trains only from the runs/data folders (#27.6).
    csv_path = write_dataset(studio.runs_dir / "datasets" / "shapes", num_clips=4, seed=3, num_images=0, num_frames=9)
    import csv

    with open(csv_path, newline="") as f:
        for row in csv.DictReader(f):
            (csv_path.parent / row["path"]).with_suffix(".txt").write_text(row["text"])
    page.get_by_role("tab", name="Fine-tune").click()
    tab = page.locator("#tab-finetune")
    tab.locator(".run-name textarea, .run-name input").first.fill("e2e-lora")
    tab.locator(".dataset-path textarea, .dataset-path input").first.fill(str(csv_path.parent / "videos"))
    tab.get_by_label("Steps").fill("6")
    tab.get_by_role("button", name="Start").click()
    page.wait_for_selector("#tab-finetune .finetune-status[data-state=finished]", timeout=180_000)
    assert "step 6/6" in tab.locator(".finetune-status").inner_text()
    assert (studio.runs_dir / "e2e-lora" / "lora.safetensors").is_file()
    assert (studio.runs_dir / "e2e-lora" / "data.csv").read_text().startswith("path,text")
    page.screenshot(path=str(tmp_path / "finetune.png"), full_page=True)

    page.get_by_role("tab", name="Text → Video").click()
    t2v_tab = page.locator("#tab-t2v")
    t2v_tab.get_by_label("LoRA", exact=True).click()
    option = page.get_by_role("option", name="e2e-lora (tiny-random)")
    option.wait_for()
    option.click()
    t2v_tab.locator(".prompt-box textarea").fill("a ball, with the fine-tuned LoRA")
    t2v_tab.get_by_role("button", name="Generate").click()
    t2v_tab.locator(".generation-status").get_by_text("Done:").wait_for()
    newest = sorted(studio.output_dir.glob("*.json"))[-1]
    loras = json.loads(newest.read_text()).get("loras")
    assert loras and loras[0]["path"].endswith("e2e-lora/lora.safetensors")


# ------------------------------------------------------------------------------ helpers
def _file(path):
    from gradio_client import handle_file

    return handle_file(str(path))


def _any_desc(job):
    data = job.status().progress_data
    return data[0].desc if data and data[0].desc else None


def _progress_desc(job):
    data = job.status().progress_data
    return data[0].desc if data and data[0].desc and "step" in data[0].desc else None


def _wait(probe, what: str, timeout: float = 90):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")
