"""Several LoRAs at once in the app, in a real Chromium (#31.4): a second row appears once one LoRA
is picked, each row has its own weight, the video is the one the CLI makes with the same two
`--lora FILE:SCALE`, "none" removes a row, and Reuse puts both LoRAs and weights back."""

import json
import re

import av
import numpy as np
import pytest
import torch

from opensora.cli import main
from opensora.lora import write_lora_file
from browser_pages import PLAYABLE, open_app, set_number
from studio_app import start_app

pytestmark = pytest.mark.browser

PROMPT = "a red ball rolling on grass"


def _lora(path, seed: int):
    """A tiny-random LoRA that changes the video (random, not zero, deltas)."""
    g = torch.Generator().manual_seed(seed)
    pairs = {f"transformer_blocks.0.attn.{name}": (torch.randn(2, 64, generator=g), torch.randn(64, 2, generator=g))
             for name in ("to_q", "to_v")}
    write_lora_file(path, pairs, rank=2, alpha=2.0, target_modules=["to_q", "to_v"], preset="tiny-random")


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lora-list-app")
    _lora(tmp / "runs" / "style-a" / "lora.safetensors", 1)
    _lora(tmp / "runs" / "style-b" / "lora.safetensors", 2)
    app = start_app(tmp)
    yield app
    app.stop()


@pytest.fixture(scope="module")
def page(browser, studio):
    page = open_app(browser, studio.url, height=1400)
    yield page
    page.close()


def frames_of(path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def pick(page, tab, label: str, option: str) -> None:
    """Pick in the LoRA row labelled `label` (its option list, not another row's still fading out)."""
    row = tab.locator(".lora-row").filter(has=page.get_by_label(label, exact=True))
    row.get_by_label(label, exact=True).click()
    row.get_by_role("option", name=option).click()


def test_two_loras_with_weights_apply_as_in_the_cli_and_reuse_restores_them(page, studio, tmp_path):
    tab = page.locator("#tab-t2v")
    assert not tab.get_by_label("LoRA 2", exact=True).is_visible()  # one row until a LoRA is picked
    pick(page, tab, "LoRA", "style-a (tiny-random)")
    tab.get_by_label("LoRA 2", exact=True).wait_for(state="visible")
    pick(page, tab, "LoRA 2", "style-b (tiny-random)")
    tab.get_by_label("LoRA 3", exact=True).wait_for(state="visible")
    set_number(tab, "LoRA scale", 0.8)
    set_number(tab, "LoRA 2 scale", 0.5)
    tab.get_by_label("Random seed").uncheck()
    tab.get_by_label("Seed", exact=True).fill("11")
    set_number(tab, "Frames", 5)
    set_number(tab, "Steps", 2)
    tab.locator(".prompt-box textarea").fill(PROMPT)
    tab.get_by_role("button", name="Generate").click()
    page.wait_for_function(PLAYABLE, arg="#tab-t2v .result-video video")
    status = tab.locator(".generation-status [data-testid=markdown]").inner_text()
    assert "Done:" in status
    video = studio.output_dir / re.search(r"\d{4}\.mp4", status).group(0)
    sidecar = json.loads(video.with_suffix(".json").read_text())
    a, b = (str((studio.runs_dir / name / "lora.safetensors").resolve()) for name in ("style-a", "style-b"))
    assert sidecar["loras"] == [{"path": a, "scale": 0.8}, {"path": b, "scale": 0.5}]

    # The same video as the CLI's with the two LoRAs at those weights; without them it differs.
    common = ["--preset", "tiny-random", "--prompt", PROMPT, "--seed", "11", "--num-frames", "5",
              "--num-steps", "2"]
    assert main(["generate", *common, "--lora", f"{a}:0.8", "--lora", f"{b}:0.5",
                 "--output-dir", str(tmp_path / "cli")]) == 0
    assert main(["generate", *common, "--output-dir", str(tmp_path / "plain")]) == 0
    app_frames = frames_of(video)
    assert np.array_equal(app_frames, frames_of(tmp_path / "cli" / "0000.mp4"))
    assert not np.array_equal(app_frames, frames_of(tmp_path / "plain" / "0000.mp4"))

    # "none" in the first row removes it: style-b moves up with its weight, one empty row below.
    pick(page, tab, "LoRA", "none")
    page.wait_for_function("() => !document.querySelector('#tab-t2v').innerText.includes('LoRA 3')")
    assert tab.get_by_label("LoRA", exact=True).input_value() == "style-b (tiny-random)"
    assert tab.get_by_label("number input for LoRA scale").input_value() == "0.5"
    assert tab.get_by_label("LoRA 2", exact=True).input_value() == "none"

    page.get_by_role("tab", name="History").click()
    history = page.locator("#tab-history")
    history.locator(".history-gallery button[aria-label^='Thumbnail 1 ']").click()
    history.get_by_role("button", name="Reuse settings").click()
    page.wait_for_function("() => document.querySelector('#tab-t2v .prompt-box textarea')?.offsetParent !== null")
    page.wait_for_function("() => document.querySelector('#tab-t2v').innerText.includes('LoRA 3')")
    assert tab.get_by_label("LoRA", exact=True).input_value() == "style-a (tiny-random)"
    assert tab.get_by_label("LoRA 2", exact=True).input_value() == "style-b (tiny-random)"
    assert tab.get_by_label("number input for LoRA scale").input_value() == "0.8"
    assert tab.get_by_label("number input for LoRA 2 scale").input_value() == "0.5"
