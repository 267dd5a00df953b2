"""Extending a video (issue #31 item 3): v2v_head parts from the last 33 frames, joined without the
overlap into one mp4 whose sidecar remakes it. The parts run on tiny-random (the session's pipeline)."""

import json
import threading

import numpy as np
import pytest
import torch

import opensora.pipeline
from opensora.errors import UserError
from opensora.extend import OVERLAP_FRAMES, extension_request, part_frames_rule, plan_extension, plan_from_sidecar, \
    run_extension
from opensora.generation_settings import GenerationRequest
from opensora.io.outputs import OutputWriter
from opensora.io.reference import load_reference
from opensora.io.video import probe_video, read_video, video_to_uint8, write_video
from opensora.presets import load_preset

PART_FRAMES = 41  # 8 new frames a part keeps the test fast; the preset's own rule is tested below


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def smooth_video(frames: int, height: int = 32, width: int = 64) -> np.ndarray:
    """A soft blob moving right on a gradient: it survives H.264 nearly unchanged (about 45 dB a pass),
    so what the test measures is the extension's doing."""
    y, x = np.mgrid[0:height, 0:width]
    video = [np.stack([90 + 60 * np.exp(-((x - 10 - t) ** 2 + (y - 16) ** 2) / 60), 80 + y, np.full_like(x, 120)], -1)
             for t in range(frames)]
    return np.asarray(video).astype(np.uint8)


class SharedPipeline:
    """A PipelineCache stand-in holding the session's tiny-random pipeline (loaded once for all tests)."""

    def __init__(self, pipe):
        from opensora.pipeline_cache import RuntimeOptions

        self.pipe, self.lock, self.ckpt_dir = pipe, threading.Lock(), None
        self.options, self.device = RuntimeOptions(device="cpu", dtype="fp32", offload="none"), "cpu"

    def get(self, preset, on_load=None, profiles=None, loras=None):
        assert preset.name == self.pipe.preset.name
        return self.pipe

    def unload(self):
        pass

    def apply_loras(self, pipe, loras):
        assert not loras


@pytest.fixture(scope="module")
def tiny():
    return load_preset("tiny-random")


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    path = tmp_path_factory.mktemp("source") / "source.mp4"
    write_video(path, smooth_video(33), 8)
    return path


@pytest.fixture(scope="module")
def extended(tiny_pipeline, tiny, source, tmp_path_factory):
    """The source extended twice (33 -> 41 -> 49 frames), with what each part's model saw recorded."""
    out = tmp_path_factory.mktemp("extended")
    seen = {"conditions": [], "videos": []}
    real_condition, real_generate = opensora.pipeline.prepare_condition, tiny_pipeline.generate

    def record_condition(shape, cond_type, references):
        masks, masked_ref = real_condition(shape, cond_type, references)
        seen["conditions"].append((cond_type, masks.clone(), masked_ref.clone()))
        return masks, masked_ref

    def record_generate(*args, **kwargs):
        result = real_generate(*args, **kwargs)
        seen["videos"].append(result.videos[0].clone())
        return result

    request = GenerationRequest(prompt="a cat", seed=3, num_steps=2)
    plan = plan_extension(source, request, seconds=49 / 8, preset=tiny, part_frames=PART_FRAMES)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(opensora.pipeline, "prepare_condition", record_condition)
        patch.setattr(tiny_pipeline, "generate", record_generate)
        result = run_extension(plan, tiny, SharedPipeline(tiny_pipeline), out)
    return dict(plan=plan, result=result, path=result.paths[0], sidecar=result.sidecars[0], seen=seen, out=out)


# ------------------------------------------------------------------------------ the plan, before any model
def test_frames_per_part_follow_the_preset():
    assert part_frames_rule(load_preset("demo"))[0] == 65  # default 33 is not above the kept 33: its limit
    assert "frame limit of 65" in part_frames_rule(load_preset("demo"))[1]
    assert part_frames_rule(load_preset("tiny-random"))[0] == 129  # default 9
    assert part_frames_rule(load_preset("opensora-v2-256px"))[0] == 129  # its default 129 > 33
    with pytest.raises(UserError, match="num_frames 30 is not allowed: use 4k\\+1"):
        part_frames_rule(load_preset("demo"), 30)
    with pytest.raises(UserError, match="a part of 33 frames adds nothing"):
        part_frames_rule(load_preset("demo"), 33)


def test_plan_on_the_demo_preset_full_parts_then_a_short_last_one(source):
    demo = load_preset("demo")
    plan = plan_extension(source, GenerationRequest(prompt="a red circle moving right", seed=9), 6, demo)
    assert [p.num_frames for p in plan.parts] == [65, 41]  # 72 frames asked at 12 fps: 33 + 32 + 8 = 73
    assert plan.frames == 73 and [p.seed for p in plan.parts] == [9, 10]
    assert {p.cond_type for p in plan.parts} == {"v2v_head"}


def test_bad_extensions_are_refused_before_anything_loads(source, tiny, tmp_path):
    request = GenerationRequest(prompt="a cat", seed=1)
    with pytest.raises(UserError, match=r"source.mp4 already has 33 frames \(4.12 s at 8 fps\); ask for more"):
        plan_extension(source, request, 4, tiny)
    with pytest.raises(UserError, match="seconds 0 is out of range"):
        plan_extension(source, request, 0, tiny)
    short = tmp_path / "short.mp4"
    write_video(short, smooth_video(17), 8)
    with pytest.raises(UserError, match="has 17 frames; extending needs at least 33"):
        plan_extension(short, request, 10, tiny)
    still = tmp_path / "still.png"
    from PIL import Image

    Image.fromarray(smooth_video(1)[0]).save(still)
    with pytest.raises(UserError, match="is an image"):
        plan_extension(still, request, 10, tiny)
    with pytest.raises(UserError, match="needs 100 parts; at most 32"):
        plan_extension(source, request, 54, tiny, part_frames=37)  # 33 + 100 x 4 frames
    with pytest.raises(UserError, match="Video DC-AE"):  # v2v_head's 33 frames do not fit its autoencoder
        plan_extension(source, request, 10, load_preset("tiny-random-hc"))


def test_a_source_made_here_lends_its_settings():
    sidecar = {"preset": "demo", "prompt": "a red circle", "num_steps": 7, "guidance": 3.5, "cond_type": "t2v",
               "use_t2i2v": True, "num_frames": 33, "seed": 4, "loras": [{"path": "l.safetensors", "scale": 0.5}]}
    request = extension_request(sidecar, None)
    assert (request.preset, request.prompt, request.num_steps, request.guidance) == ("demo", "a red circle", 7, 3.5)
    assert request.loras[0].scale == 0.5 and request.seed is None and request.use_t2i2v is None
    assert extension_request(sidecar, "now it stops").prompt == "now it stops"


# ------------------------------------------------------------------------------ two parts on tiny-random
def test_extended_twice_the_frame_count_adds_up(extended):
    info = probe_video(extended["path"])
    assert info.num_frames == 33 + 2 * (PART_FRAMES - OVERLAP_FRAMES) == 49
    assert (info.height, info.width, info.fps) == (32, 64, 8.0)
    extension = extended["sidecar"]["extension"]
    assert (extension["source_frames"], extension["frames"], extension["overlap_frames"]) == (33, 49, 33)
    assert extension["length_s"] == 49 / 8
    assert [p["num_frames"] for p in extension["parts"]] == [PART_FRAMES, PART_FRAMES]
    assert [p["seed"] for p in extension["parts"]] == [3, 4] and extension["part_frames_rule"]
    assert extension["source"].startswith(str(extended["out"] / "references"))  # kept: the sidecar remakes from it
    on_disk = json.loads(extended["path"].with_suffix(".json").read_text())
    assert on_disk["extension"]["parts"] == json.loads(json.dumps(extension["parts"]))


def test_each_part_is_conditioned_on_exactly_the_latents_of_the_last_33_frames(extended, tiny_pipeline):
    parts = extended["sidecar"]["extension"]["parts"]
    conditions = extended["seen"]["conditions"]
    assert len(conditions) == len(parts) == 2
    for (cond_type, masks, masked_ref), part in zip(conditions, parts):
        assert cond_type == "v2v_head"
        assert masks[0, 0, :9].eq(1).all() and masks[0, 0, 9:].eq(0).all()  # 33 frames = 9 latent frames
        clip = part["reference"][0]  # the last 33 frames so far, as the part's reference file
        pixels = load_reference(clip, 32, 64)
        assert pixels.shape[1] == OVERLAP_FRAMES
        generator = torch.Generator().manual_seed(part["seed"])  # the pipeline samples the posterior so
        expected = tiny_pipeline.vae.encode(pixels[None], sample=True, generator=generator)[0]
        assert torch.equal(masked_ref[0, :, :9], expected[:, :9])
        assert masked_ref[0, :, 9:].abs().max() == 0


def test_the_references_are_the_last_33_frames_of_the_video_so_far(extended, source):
    joined, _ = read_video(extended["path"])
    parts = extended["sidecar"]["extension"]["parts"]
    first_clip, _ = read_video(parts[0]["reference"][0])
    assert psnr(first_clip, read_video(source)[0]) > 40  # part 1 continues the source's 33 frames
    second_clip, _ = read_video(parts[1]["reference"][0])
    new = PART_FRAMES - OVERLAP_FRAMES
    assert psnr(second_clip, joined[new:new + OVERLAP_FRAMES]) > 30  # part 2 continues source[8:] + part 1's new


def test_the_source_frames_are_kept_and_each_part_adds_only_its_new_frames(extended, source):
    joined, _ = read_video(extended["path"])
    original, _ = read_video(source)
    assert psnr(joined[:33], original) >= 40  # the source's own frames, through H.264 once more
    new = PART_FRAMES - OVERLAP_FRAMES
    for k, video in enumerate(extended["seen"]["videos"]):
        part = video_to_uint8(video).astype(np.float64)
        seam = joined[33 + k * new: 33 + (k + 1) * new]
        # Each joined frame after the source is, of all the part's frames, closest to the part's new frame
        # it should be (not to an overlap frame). Tiny-random's noise-like frames keep only ~25 dB in H.264.
        for i, frame in enumerate(seam):
            errors = ((part - frame) ** 2).mean(axis=(1, 2, 3))
            assert errors.argmin() == OVERLAP_FRAMES + i
        assert psnr(seam, part[OVERLAP_FRAMES:]) > 20


def test_the_sidecar_remakes_the_video_frame_for_frame(extended, tiny_pipeline, tiny):
    plan = plan_from_sidecar(extended["sidecar"], tiny)
    assert [p.seed for p in plan.parts] == [3, 4] and plan.frames == 49
    remade = run_extension(plan, tiny, SharedPipeline(tiny_pipeline), extended["out"]).paths[0]
    assert remade != extended["path"]
    assert np.array_equal(read_video(remade)[0], read_video(extended["path"])[0])


def test_the_same_frames_encode_to_the_same_bytes(tmp_path):
    """What a remake needs: the encoder is repeatable (with B-frames, this libx264 was not)."""
    from opensora.io.video import encode_video

    y, x = np.mgrid[0:256, 0:448]
    frames = np.asarray([np.stack([(x + 3 * t) % 256, (y + t) % 256, (x * y // 64 + t) % 256], -1)
                         for t in range(33)], dtype=np.uint8)
    encoded = set()
    for k in range(3):
        encode_video(tmp_path / f"{k}.mp4", frames, 24)
        encoded.add((tmp_path / f"{k}.mp4").read_bytes())
    assert len(encoded) == 1


# ------------------------------------------------------------------------------ the command
def test_extend_command_takes_the_videos_own_settings(tiny_pipeline, tmp_path, capsys, monkeypatch):
    from opensora.cli import main

    out = tmp_path / "out"
    made_here = OutputWriter(out).write(smooth_video(33), 8, {"preset": "tiny-random", "prompt": "a dog runs",
                                                              "num_steps": 1, "seed": 0}, text="a dog runs", seed=0)
    monkeypatch.setattr("opensora.pipeline_cache.PipelineCache", lambda *args: SharedPipeline(tiny_pipeline))
    code = main(["extend", str(made_here), "--seconds", "4.6", "--part-frames", "37", "--seed", "5",
                 "--output-dir", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    path = captured.out.strip()
    assert path == str(out / "0001.mp4") and probe_video(path).num_frames == 37
    sidecar = json.loads((out / "0001.json").read_text())
    assert (sidecar["prompt"], sidecar["num_steps"], sidecar["seed"]) == ("a dog runs", 1, 5)
    assert "1 part(s) of v2v_head, 33 -> 37 frames" in captured.err

    assert main(["extend", str(made_here), "--seconds", "2", "--output-dir", str(out)]) == 2
    assert "already has 33 frames" in capsys.readouterr().err
