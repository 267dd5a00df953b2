"""Memory profiles, T5 quantisation, fp8 and the attention kernel wired into generation: the CLI's
flags, the pipeline cache's RuntimeOptions, the planner's check before anything loads, and each
video's sidecar saying how it ran."""

import json
import re

import av
import numpy as np
import pytest
import torch

from opensora.cli import main
from opensora.errors import UserError
from opensora.generation_settings import GenerationRequest, LoraChoice, resolve_settings
from opensora.pipeline_cache import PipelineCache, RuntimeOptions
from opensora.presets import load_preset
from opensora.refine import prepare_prompt
from test_lora_files import _random_lora
from test_official_loading import ckpt_dir  # noqa: F401 - the official-layout folder fixture

OFFLOADED = ["model", "group", "sequential", "disk"]
BASE = ["generate", "--preset", "tiny-random", "--prompt", "a red fox", "--num-steps", "2", "--seed", "3",
        "--aspect-ratio", "1:1"]


def frames(path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def sidecar(folder) -> dict:
    return json.loads((folder / "0000.json").read_text())


@pytest.fixture(scope="module")
def none_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("none")
    assert main([*BASE, "--output-dir", str(out)]) == 0  # --offload auto: the planner picks none here
    return out


def test_auto_picks_none_on_this_cpu_and_the_sidecar_says_how_it_ran(none_run):
    runtime = sidecar(none_run)["runtime"]
    assert runtime == {"device": "cpu", "offload": "none", "text_encoder_quant": None, "fp8_mmdit": False,
                       "attention": "sdpa", "vae_temporal_tiling": False, "sequence_parallel": 1}


@pytest.mark.parametrize("profile", OFFLOADED)
def test_cli_profile_makes_the_video_of_none(profile, none_run, tmp_path):
    out = tmp_path / "out"
    blocks = tmp_path / "blocks"
    assert main([*BASE, "--output-dir", str(out), "--offload", profile, "--offload-dir", str(blocks)]) == 0
    runtime = sidecar(out)["runtime"]
    assert runtime["offload"] == profile
    assert runtime["vae_temporal_tiling"] == (profile != "model")  # the profiles' data
    video, reference = frames(out / "0000.mp4"), frames(none_run / "0000.mp4")
    assert video.shape == reference.shape == (9, 48, 48, 3)
    assert np.abs(video.astype(int) - reference.astype(int)).max() <= 1
    if profile == "disk":
        assert any(p.suffix == ".safetensors" for p in blocks.iterdir())  # the blocks went through files


def _job(prompt="a red fox", **changes):
    preset = load_preset("tiny-random")
    settings = resolve_settings(GenerationRequest(prompt=prompt, num_steps=2, seed=3, aspect_ratio="1:1",
                                                  **changes), preset)
    prepared = prepare_prompt(settings.prompt, refine=False, motion_score=settings.motion_score, fps=settings.fps)
    return preset, settings, prepared


def _latent(cache: PipelineCache, profile: str, loras=()) -> torch.Tensor:
    preset, settings, prepared = _job(loras=list(loras))
    pipe = cache.get(preset, profiles=[profile], loras=settings.loras)
    cache.apply_loras(pipe, settings.loras)
    return pipe.generate(settings, prepared).latents[0]


@pytest.fixture(scope="module")
def none_latent():
    return _latent(PipelineCache("ckpts", "cpu", "fp32"), "none")


@pytest.mark.parametrize("profile", OFFLOADED)
def test_every_profile_gives_the_none_latent(profile, none_latent):
    cache = PipelineCache("ckpts", options=RuntimeOptions(device="cpu", dtype="fp32", offload=profile))
    latent = _latent(cache, profile)
    diff = (latent - none_latent).abs().max().item()
    print(f"{profile} vs none: max abs latent diff {diff:.2e}")
    assert diff <= 1e-5 and none_latent.abs().max() > 0.1
    cache.unload()


def test_disk_files_are_gone_after_unload():
    cache = PipelineCache("ckpts", options=RuntimeOptions(device="cpu", dtype="fp32", offload="disk"))
    _latent(cache, "disk")
    folder = cache.get(load_preset("tiny-random")).offload.offload_dir
    assert any(folder.iterdir())
    cache.unload()
    assert not folder.exists()


def test_changed_options_reload_and_auto_keeps_a_profile_that_fits():
    cache = PipelineCache("ckpts", options=RuntimeOptions(device="cpu", dtype="fp32"))
    preset = load_preset("tiny-random")
    group = cache.get(preset, profiles=["group", "none"])  # auto: the fastest fitting one is loaded
    assert cache.get(preset, profiles=["none", "group"]) is group  # still fits: no reload
    assert cache.get(preset, profiles=["none"]) is not group  # no longer among those that fit
    loaded = cache.get(preset, profiles=["none"])
    cache.options = RuntimeOptions(device="cpu", dtype="fp32", attention="sdpa")
    assert cache.get(preset, profiles=["none"]) is not loaded  # another option: the next job reloads


def test_lora_change_under_group_offload_reloads_and_matches_none(tmp_path, none_latent):
    from opensora.pipeline import OpenSoraPipeline

    module = ["transformer_blocks.0.attn.to_q"]
    first, second = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    plain = OpenSoraPipeline.from_preset("tiny-random")
    _random_lora(first, plain, module, seed=1)
    _random_lora(second, plain, module, seed=2)
    expected = _latent(PipelineCache("ckpts", "cpu", "fp32"), "none", [LoraChoice(str(second), 0.5)])
    cache = PipelineCache("ckpts", options=RuntimeOptions(device="cpu", dtype="fp32", offload="group"))
    _latent(cache, "group", [LoraChoice(str(first), 0.5)])
    placed = cache.get(load_preset("tiny-random"), profiles=["group"])
    assert not placed.weights_editable  # the blocks sit behind offload hooks now
    with pytest.raises(UserError, match="LoRAs are merged before memory profile group is applied"):
        placed.load_lora(second, 0.5)
    latent = _latent(cache, "group", [LoraChoice(str(second), 0.5)])  # reloaded, merged, placed again
    assert (latent - expected).abs().max().item() <= 1e-5
    assert (latent - none_latent).abs().max().item() > 1e-3  # the LoRA did change it


def test_fp8_weights_run_and_are_recorded(tmp_path, none_run):
    out = tmp_path / "out"
    assert main([*BASE, "--output-dir", str(out), "--fp8-mmdit"]) == 0
    assert sidecar(out)["runtime"]["fp8_mmdit"] is True
    assert frames(out / "0000.mp4").shape == frames(none_run / "0000.mp4").shape


def test_int8_t5_runs_the_official_layout_pipeline(ckpt_dir, tmp_path):  # noqa: F811
    root, preset_path, _ = ckpt_dir
    out = tmp_path / "out"
    assert main(["generate", "--preset", str(preset_path), "--ckpt-dir", str(root), "--prompt", "a red fox",
                 "--output-dir", str(out), "--seed", "1", "--text-encoder-quant", "int8"]) == 0
    assert sidecar(out)["runtime"]["text_encoder_quant"] == "int8"
    assert frames(out / "0000.mp4").shape[0] == 9
    # Layer by layer (offload hooks on the 8-bit layers too): the same video.
    leaf = tmp_path / "leaf"
    assert main(["generate", "--preset", str(preset_path), "--ckpt-dir", str(root), "--prompt", "a red fox",
                 "--output-dir", str(leaf), "--seed", "1", "--text-encoder-quant", "int8", "--offload", "sequential"]) == 0
    assert np.array_equal(frames(leaf / "0000.mp4"), frames(out / "0000.mp4"))
    from opensora.pipeline import OpenSoraPipeline

    pipe = OpenSoraPipeline.from_preset(str(preset_path), ckpt_dir=root,
                                        runtime=RuntimeOptions(text_encoder_quant="int8", offload="none"))
    assert "Linear8bitLt" in {type(m).__name__ for m in pipe.text_encoder.t5.modules()}


@pytest.mark.parametrize("args, message", [
    (["--height", "4096", "--width", "4096", "--num-frames", "129"],
     r"129 frames of 4096x4096 \(2164 M pixels\) is too large for a CPU run: no memory profile fits [\d.]+ GiB RAM; "
     r"what would fit: --num-frames \d+ with profile none; --resolution tiny \(48x48\) with profile none"),
    (["--attention", "flash"], "attention backend 'flash' cannot be used: it runs on CUDA GPUs only"),
    (["--attention", "fast"], "unknown attention backend 'fast'; allowed: auto, sdpa, flash, flash3, sage, xformers"),
    (["--text-encoder-quant", "int4"], "unknown text encoder quantisation 'int4'; allowed: none, int8, nf4"),
    (["--text-encoder-quant", "int8"], "preset tiny-random draws random encoders"),
])
def test_refused_before_anything_loads(tmp_path, capsys, args, message):
    code = main([*BASE, "--output-dir", str(tmp_path / "o"), *args])
    err = capsys.readouterr().err
    assert code == 2 and "preset tiny-random (" not in err  # the line printed when loading starts
    assert re.search(message, err), err
    assert not (tmp_path / "o").exists()


def test_nothing_fits_a_small_machine_names_what_the_settings_need(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("opensora.memory.fit.machine_limits", lambda device: (None, 0.3))  # 0.3 GiB of RAM
    assert main([*BASE, "--output-dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "is too large for a CPU run: no memory profile fits 0.3 GiB RAM" in err
    assert "nothing smaller helps at these limits; these settings need at least 0.6 GiB RAM (disk)" in err


def test_a_requested_profile_that_does_not_fit_names_those_that_do(tmp_path, capsys, monkeypatch):
    from opensora.memory.fit import plan_job, plan_request

    request = plan_request(load_preset("tiny-random"), 9, 48, 48, device="cpu", dtype="fp32")
    rows = {row.profile: row.ram_gib for row in plan_job(request).rows}
    between = (rows["disk"] + rows["none"]) / 2  # disk fits, none does not
    monkeypatch.setattr("opensora.memory.fit.machine_limits", lambda device: (None, between))
    assert main([*BASE, "--output-dir", str(tmp_path / "o"), "--offload", "none"]) == 2
    assert "memory profile none needs about" in capsys.readouterr().err
    assert main([*BASE, "--output-dir", str(tmp_path / "o")]) == 0  # auto takes the one that fits
    assert sidecar(tmp_path / "o")["runtime"]["offload"] == "disk"


def test_open_sora_1_2_refuses_profiles_clearly(tmp_path, capsys):
    code = main(["generate", "--preset", "tiny-random-v1-2", "--prompt", "a cat", "--offload", "group",
                 "--output-dir", str(tmp_path)])
    assert code == 2
    assert "offload profiles, quantised encoders, fp8 weights and attention backends are not supported for " \
           "Open-Sora 1.2 presets (tiny-random-v1-2) yet" in capsys.readouterr().err


def _gpu_table_cell(preset_name: str, vram: float, quant: str | None) -> str:
    """A README cell as `python -m opensora plan --preset P --num-frames 129 --vram-gb G --ram-gb 64` decides."""
    from opensora.memory.fit import cached_sizes, plan_job, plan_request
    from opensora.memory.planner import what_would_fit

    preset = load_preset(preset_name)
    height, width = preset.image_size(preset.sampler.resolution, preset.sampler.aspect_ratio)
    request = plan_request(preset, 129, height, width, dtype="bf16", text_encoder_quant=quant)
    row = plan_job(request).choose(vram, 64)
    if row is not None:
        return f"{row.profile} ({row.gpu_gib:.1f} / {row.ram_gib:.1f})"
    offers = what_would_fit(request, vram, 64, cached_sizes(preset, None))
    frames = next(o for o in offers if o.startswith("--num-frames"))
    smaller = next(o for o in offers if o.startswith("--resolution 256px"))
    frames_profile, smaller_profile = frames.rsplit(" ", 1)[1], smaller.rsplit(" ", 1)[1]
    return (f"none fits: `{frames.split(' with ')[0]}` ({frames_profile}) or 256px"
            + ("" if smaller_profile == frames_profile else f" ({smaller_profile})"))


def test_readme_gpu_table_is_the_planners_choice():
    from conftest import REPO

    readme = (REPO / "README.md").read_text()
    for vram in (8, 12, 16, 24, 48, 80):
        cells = [_gpu_table_cell("opensora-v2-256px", vram, None), _gpu_table_cell("opensora-v2-256px", vram, "int8"),
                 _gpu_table_cell("opensora-v2-768px", vram, None)]
        row = f"| {vram} | " + " | ".join(cells) + " |"
        assert row in readme, row
