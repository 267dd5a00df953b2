"""Open-Sora 1.2 as a second model family, end to end: presets, settings, the pipeline behind
PipelineCache, the CLI (generate / check / parity), the runner's notices, the app's banner and labels."""

import json
import re
import shutil
import subprocess
import sys

import av
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from conftest import REPO, run_cli
from opensora.cli import main as opensora_main
from opensora.errors import UserError
from opensora.generation_settings import GenerationRequest, LoraChoice, frame_rule, resolve_settings
from opensora.io.video import write_video
from opensora.presets import load_preset
from opensora.sampling.prompt_v1_2 import t5_prompt

TINY = "tiny-random-v1-2"
FIXTURES = REPO / "tests" / "fixtures" / "opensora_v1_2"


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors on a shared CPU: one thread is several times faster than two."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def refs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("refs")
    rng = np.random.default_rng(0)
    for name in ("first.png", "last.png"):
        Image.fromarray(rng.integers(0, 255, (72, 120, 3), dtype=np.uint8)).save(folder / name)
    write_video(folder / "clip.mp4", rng.integers(0, 255, (20, 40, 72, 3), dtype=np.uint8), fps=8)
    return folder


@pytest.fixture(scope="module")
def pipe():
    from opensora.pipeline_cache import pipeline_class

    preset = load_preset(TINY)
    return pipeline_class(preset).from_preset(preset)


def frames_of(path) -> tuple[int, int, int]:
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    return len(frames), frames[0].shape[0], frames[0].shape[1]


def settings(**kw):
    return resolve_settings(GenerationRequest(**{"prompt": "a cat", "seed": 3, **kw}), load_preset(TINY))


# ------------------------------------------------------------------------------ the CLI of the issue
def test_cli_i2v_head_34_frames_writes_an_mp4_of_34_frames_and_a_sidecar_naming_the_family(tmp_path, refs):
    out = tmp_path / "out"
    proc = run_cli("generate", "--preset", TINY, "--prompt", "a cat", "--num-frames", "34", "--cond-type", "i2v_head",
                   "--ref", str(refs / "first.png"), "--output-dir", str(out), "--threads", "1")
    assert proc.returncode == 0, proc.stderr
    assert frames_of(out / "0000.mp4") == (34, 32, 64)  # the tiny 16:9 bucket
    sidecar = json.loads((out / "0000.json").read_text())
    assert sidecar["family"] == "opensora-v1.2" and sidecar["preset"] == TINY and sidecar["num_frames"] == 34
    assert sidecar["mask_strategy"] == "0" and sidecar["align"] == 5 and sidecar["cond_type"] == "i2v_head"
    assert sidecar["model_prompt"] == "a cat aesthetic score: 6.5." == t5_prompt("a cat", 6.5)
    assert sidecar["official_aspect_ratio"] == "9:16"  # v1.2's own H:W name of this landscape bucket
    assert (sidecar["height"], sidecar["width"], sidecar["decoded_height"], sidecar["decoded_width"]) == (32, 64, 32, 64)
    assert sidecar["guidance_img"] is None and sidecar["loras"] == []
    again = resolve_settings(GenerationRequest.from_sidecar(sidecar, out), load_preset(TINY)).to_dict()  # Reuse
    assert {k: sidecar[k] for k in again} == again


@pytest.mark.parametrize("frames, fragment", [
    ("16", "num_frames 16 is not supported by Open-Sora 1.2: use 1 (an image) or 17..68 frames"),
    ("69", "num_frames 69 is not supported by Open-Sora 1.2: use 1 (an image) or 17..68 frames"),
    ("3s", "num_frames '3s' is not allowed: give a frame count (1, or 17..68) or a length of preset "
           "tiny-random-v1-2 (1s = 17, 2s = 34)"),
])
def test_bad_frame_counts_give_the_v1_2_rule_before_anything_loads(tmp_path, capsys, monkeypatch, frames, fragment):
    from opensora.pipeline_cache import PipelineCache

    monkeypatch.setattr(PipelineCache, "get", lambda *a, **k: pytest.fail("a model was loaded"))
    code = opensora_main(["generate", "--preset", TINY, "--prompt", "a cat", "--num-frames", frames,
                          "--output-dir", str(tmp_path / "out")])
    assert code == 2 and fragment in capsys.readouterr().err and not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------ settings
def test_frame_rule_and_named_lengths_follow_the_family():
    assert settings(num_frames=34).num_frames == 34  # not 4k+1: fine for 1.2
    assert settings(num_frames="2s").num_frames == 34 and settings(num_frames=1).num_frames == 1
    assert load_preset("opensora-v1-2").lengths == {"2s": 51, "4s": 102, "8s": 204, "16s": 408}
    rule = frame_rule(load_preset(TINY))
    assert (rule.nearest(8), rule.nearest(10), rule.nearest(34), rule.nearest(500)) == (1, 17, 34, 68)
    v2 = load_preset("tiny-random")
    with pytest.raises(UserError, match="num_frames 34 is not allowed: use 4k\\+1"):
        resolve_settings(GenerationRequest(prompt="a cat", num_frames=34), v2)
    assert frame_rule(v2).nearest(34) in (33, 37)


@pytest.mark.parametrize("kw, fragment", [
    (dict(cond_type="v2v_head_easy"), "cond type 'v2v_head_easy' has no Open-Sora 1.2 equivalent; allowed: t2v, "
                                      "i2v_head, i2v_tail, i2v_loop, v2v_head, v2v_tail"),
    (dict(guidance_img=3.0), "guidance_img 3.0 is an Open-Sora 2.0 setting"),
    (dict(negative_prompt="blurry"), "takes no negative prompt"),
    (dict(loras=[LoraChoice("x.safetensors")]), "LoRAs are for Open-Sora 2.0 presets"),
    (dict(motion_score="dynamic"), "motion score 'dynamic' is for Open-Sora 2.0 presets"),
    (dict(aesthetic_score=11), "aesthetic score 11 must be a number in 0..10"),
    (dict(camera_motion="spin"), "camera motion 'spin' is not one of: pan right"),
    (dict(mask_strategy="0,0,x"), "mask strategy group '0,0,x': ref_start 'x' must be an integer"),
    (dict(mask_strategy="0"), "mask strategy uses reference 0 but no reference was given"),
    (dict(mask_strategy="1"), "loop_id 1 needs the official multi-loop generation"),
    (dict(height=20, width=7), "width 7 is not allowed: give both height and width as pixel counts between 16"),
])
def test_v1_2_settings_refuse_what_the_family_cannot_do(kw, fragment):
    with pytest.raises(UserError) as err:
        settings(**kw)
    assert fragment in str(err.value)


def test_open_sora_2_refuses_the_v1_2_settings():
    v2 = load_preset("tiny-random")
    for kw in (dict(mask_strategy="0"), dict(aesthetic_score=6.5), dict(camera_motion="pan left")):
        with pytest.raises(UserError, match=f"{next(iter(kw))} .* is an Open-Sora 1.2 setting; preset tiny-random is "
                                            "Open-Sora 2.0"):
            resolve_settings(GenerationRequest(prompt="a cat", **kw), v2)
    assert resolve_settings(GenerationRequest(prompt="a cat"), v2).family == "opensora-v2"


def test_score_settings_reach_the_t5_text(pipe):
    from opensora.refine import prepare_prompt

    one = settings(motion_score="4", camera_motion="pan right", aesthetic_score="none", height=24, width=41)
    assert (one.motion_score, one.camera_motion, one.aesthetic_score) == (4.0, "pan right", None)
    prepared = prepare_prompt("A Car (red) on the Ocean.", refine=False, motion_score=4)
    assert pipe.t5_text(one, prepared) == "a car red on the ocean. motion score: 4.0. camera motion: pan right."
    result = pipe.generate(one, prepared)
    assert result.videos[0].shape == (3, 17, 24, 40)  # any size: the VAE floors to 8 px (41 -> 40)
    assert (result.settings[0]["decoded_height"], result.settings[0]["decoded_width"]) == (24, 40)


# ------------------------------------------------------------------------------ the pipeline
def _placed(strategy: str, latent_t: int, ref_frames: list[int]) -> dict[int, tuple[int, int]]:
    from opensora.sampling.mask_strategy import parse_mask_strategy, place

    return {p.target_start + k: (p.ref_index, p.ref_start + k)
            for p in place(parse_mask_strategy(strategy), latent_t, ref_frames) for k in range(p.length)}


@pytest.mark.parametrize("cond_type, files, frames, strategy, kept", [
    ("t2v", [], 17, "", {}),
    ("i2v_head", ["first.png"], 34, "0", {0: (0, 0)}),
    ("i2v_tail", ["last.png"], 34, "0,0,0,-1,1", {5: (0, 0)}),  # align=5: latent frame 5 of 10, not 9
    ("i2v_loop", ["first.png", "last.png"], 35, "0;0,1,0,-1,1", {0: (0, 0), 10: (1, 0)}),
    ("v2v_head", ["clip.mp4"], 34, "0,0,0,0,5", {k: (0, k) for k in range(5)}),
    ("v2v_tail", ["clip.mp4"], 34, "0,0,-5,-5,5", {5 + k: (0, k) for k in range(5)}),
])
def test_each_cond_type_keeps_its_reference_latents_where_the_strategy_puts_them(pipe, refs, cond_type, files,
                                                                                frames, strategy, kept):
    from opensora.refine import prepare_prompt

    one = settings(cond_type=cond_type, reference=[str(refs / f) for f in files], num_frames=frames, num_steps=3)
    assert one.mask_strategy == strategy
    result = pipe.generate(one, prepare_prompt("a cat", refine=False, motion_score=4))
    video, latent = result.videos[0], result.latents[0]
    assert video.shape == (3, frames, 32, 64) and torch.isfinite(video).all()
    latent_t = pipe.vae.latent_frames(frames)
    references = pipe._encode_references(one, torch.Generator().manual_seed(one.seed))  # the same draws
    assert _placed(strategy, latent_t, [r.shape[1] for r in references]) == kept
    for target, (index, source) in kept.items():  # edit ratio 0: the reference frame comes back exactly
        assert torch.equal(latent[:, target], references[index][:, source])
    if kept:
        generated = [t for t in range(latent_t) if t not in kept]
        assert not torch.equal(latent[:, generated[0]], references[0][:, 0])


def test_raw_mask_strategy_wins_over_the_cond_type_and_reads_each_file_whole(pipe, refs):
    from opensora.refine import prepare_prompt

    one = settings(mask_strategy="0,0,0,5,1;0,1,5,0,5,0.5", reference=[str(refs / "first.png"), str(refs / "clip.mp4")],
                   num_frames=34, num_steps=3)
    assert (one.cond_type, one.mask_strategy) == ("t2v", "0,0,0,5,1;0,1,5,0,5,0.5")
    references = pipe._encode_references(one, torch.Generator().manual_seed(one.seed))
    assert [r.shape[1] for r in references] == [1, 6]  # an image; all 20 frames of the clip (17 -> 5, 3 -> 1)
    latent = pipe.generate(one, prepare_prompt("a cat", refine=False, motion_score=4)).latents[0]
    assert torch.equal(latent[:, 5], references[0][:, 0])  # edit ratio 0: kept
    assert not torch.equal(latent[:, 0], references[1][:, 5])  # edit ratio 0.5: regenerated from step ~half


def test_seeds_reproduce_and_sample_k_is_seed_plus_k(pipe):
    from opensora.refine import prepare_prompt

    prepared = prepare_prompt("a cat", refine=False, motion_score=4)
    both = pipe.generate(settings(num_samples=2, num_steps=2), prepared)
    second = pipe.generate(settings(num_steps=2, seed=4), prepared)
    assert [s["seed"] for s in both.settings] == [3, 4]
    assert torch.equal(both.videos[1], second.videos[0]) and not torch.equal(both.videos[0], both.videos[1])


def test_loras_are_refused_by_the_pipeline(pipe):
    with pytest.raises(UserError, match="LoRAs are for Open-Sora 2.0 presets"):
        pipe.load_lora("runs/x/lora.safetensors")


# ------------------------------------------------------------------------------ runner + cache
def test_run_job_through_the_cache_writes_videos_and_warns_about_the_align_quirk(tmp_path, refs):
    from opensora.pipeline_cache import PipelineCache
    from opensora.pipeline_v1_2 import OpenSoraV12Pipeline
    from opensora.runner import run_job

    preset, cache = load_preset(TINY), PipelineCache(tmp_path / "ckpts", "cpu", "fp32")
    tail = resolve_settings(GenerationRequest(prompt="a cat", cond_type="i2v_tail", reference=[str(refs / "last.png")],
                                              num_frames=34, num_steps=2, seed=1), preset)
    job = run_job(preset, tail, cache, tmp_path / "out")
    assert isinstance(cache.get(preset), OpenSoraV12Pipeline)
    assert frames_of(job.paths[0])[0] == 34 and job.sidecars[0]["family"] == "opensora-v1.2"
    quirk = [n for n in job.notices if "align=5" in n]
    assert quirk == ["mask strategy '0,0,0,-1,1,0.0' (i2v_tail): Open-Sora 1.2 snaps positions to multiples of 5 "
                     "latent frames (the official align=5), so the reference lands at latent frame 5 of 10 instead "
                     "of 9; with 35 frames it lands where the strategy says"]
    exact = resolve_settings(GenerationRequest(prompt="a cat", cond_type="i2v_tail", reference=[str(refs / "last.png")],
                                               num_frames=35, num_steps=2, seed=1), preset)
    assert not [n for n in run_job(preset, exact, cache, tmp_path / "out").notices if "align" in n]


# ------------------------------------------------------------------------------ presets, check, parity, app
def test_reading_a_v1_2_preset_imports_no_torch():
    code = ("import sys; from opensora.presets import load_preset; p = load_preset('opensora-v1-2'); "
            "print(p.family, p.stdit3.depth, p.vae.micro_frame_size, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["opensora-v1.2", "28", "17", "False"]


def test_preset_loader_keeps_the_families_apart(tmp_path):
    text = (REPO / "presets" / f"{TINY}.toml").read_text()
    (tmp_path / "v2-with-stdit3.toml").write_text(text.replace('family = "opensora-v1.2"', ""))
    with pytest.raises(UserError, match=r"\[stdit3\] is an Open-Sora 1.2 table"):
        load_preset(str(tmp_path / "v2-with-stdit3.toml"))
    (tmp_path / "odd.toml").write_text(text.replace('"16:9" = [32, 64]', '"16:9" = [30, 62]'))
    assert load_preset(str(tmp_path / "odd.toml")).image_size("tiny", "16:9") == (30, 62)  # any size in 1.2
    (tmp_path / "unnamed.toml").write_text(text.replace('"4:3" = "3:4"\n', ""))
    with pytest.raises(UserError, match=r"\[official_aspect_ratio\] has no official \(height:width\) name for 4:3"):
        load_preset(str(tmp_path / "unnamed.toml"))
    (tmp_path / "family.toml").write_text(text.replace("opensora-v1.2", "opensora-v9"))
    with pytest.raises(UserError, match="unknown family 'opensora-v9'; known: opensora-v2, opensora-v1.2"):
        load_preset(str(tmp_path / "family.toml"))


def _official_v1_2_files(root):
    (root / "OpenSora-STDiT-v3").mkdir(parents=True)
    (root / "OpenSora-VAE-v1.2").mkdir()
    (root / "google" / "t5-v1_1-xxl").mkdir(parents=True)
    save_file({"w": torch.zeros(2)}, str(root / "OpenSora-STDiT-v3" / "model.safetensors"))
    save_file({"w": torch.zeros(2)}, str(root / "OpenSora-VAE-v1.2" / "model.safetensors"))
    (root / "google" / "t5-v1_1-xxl" / "config.json").write_text("{}")


def test_check_knows_the_v1_2_files(tmp_path, capsys):
    assert opensora_main(["check", "--ckpt-dir", str(tmp_path), "--preset", "opensora-v1-2"]) == 1
    out = capsys.readouterr().out
    for role, name in (("stdit3", "OpenSora-STDiT-v3/model.safetensors"), ("vae", "OpenSora-VAE-v1.2/model.safetensors"),
                       ("t5", "google/t5-v1_1-xxl")):
        assert re.search(rf"\[MISSING\] {role} +{re.escape(str(tmp_path / name))}\n", out), role
    assert "huggingface-cli download hpcai-tech/OpenSora-STDiT-v3" in out
    _official_v1_2_files(tmp_path)
    assert opensora_main(["check", "--ckpt-dir", str(tmp_path), "--preset", "opensora-v1-2"]) == 0
    assert "opensora-v1-2: ready" in capsys.readouterr().out


def test_app_banner_and_picker_know_the_family(tmp_path):
    from app.presets_info import availability, banner_markdown, preset

    assert preset("opensora-v1-2").label == "opensora-v1-2 (Open-Sora 1.2)"
    assert preset("tiny-random").label == "tiny-random (Open-Sora 2.0)"
    info = availability(tmp_path)
    assert TINY in info.selectable and TINY not in info.trainable and "tiny-random" in info.trainable
    assert "OpenSora-STDiT-v3/model.safetensors" in info.help_markdown(tmp_path)
    banner = banner_markdown(TINY, tmp_path)
    assert banner.startswith(f"**Model:** `{TINY}` (Open-Sora 1.2)")
    assert "Open-Sora 1.2: `huggingface-cli download hpcai-tech/OpenSora-STDiT-v3" in banner
    _official_v1_2_files(tmp_path)
    (tmp_path / "OpenSora-VAE-v1.2" / "model.safetensors").write_bytes(b"")
    assert "`model.safetensors`: 0 bytes" in banner_markdown("tiny-random", tmp_path)


def test_parity_command_dispatches_a_v1_2_folder(tmp_path, capsys):
    for name in ("sampler_tiny.json", "sampler_spec_v1_2.md"):  # the tensor-free checks: seconds
        shutil.copy(FIXTURES / name, tmp_path / name)
    assert opensora_main(["parity", str(tmp_path)]) == 0
    errors = json.loads(capsys.readouterr().out)
    assert errors == {"sampler_v1_2_prompts": 0.0, "sampler_v1_2_mask_cases": 0.0, "sampler_v1_2_schedules": 0.0}


# ------------------------------------------------------------------------------ memory planner / offload
def test_memory_planner_says_it_does_not_cover_the_family_yet(capsys):
    assert opensora_main(["plan", "--preset", "opensora-v1-2", "--vram-gb", "24", "--ram-gb", "64"]) == 2
    assert "the memory planner covers Open-Sora 2.0 presets; preset opensora-v1-2 is Open-Sora 1.2" in \
        capsys.readouterr().err


def test_offload_profiles_place_the_v1_2_components_and_fp8_is_refused_clearly():
    from opensora.memory.profiles import load_memory_profiles
    from opensora.offload import apply_offload
    from opensora.pipeline_v1_2 import OpenSoraV12Pipeline

    for name in load_memory_profiles():
        one = OpenSoraV12Pipeline.from_preset(TINY)
        offload = apply_offload(one, name, "cpu")
        try:
            with offload.encode(), offload.sample(), offload.decode():
                video = one("a cat", num_frames=17, num_steps=1, seed=0).videos[0]
            assert video.shape == (3, 17, 32, 64) and torch.isfinite(video).all(), name
        finally:
            offload.close()
    with pytest.raises(UserError, match="fp8 weight storage needs a diffusers model .* STDiT3 does not support it yet"):
        apply_offload(OpenSoraV12Pipeline.from_preset(TINY), "none", "cpu", fp8_mmdit=True)
