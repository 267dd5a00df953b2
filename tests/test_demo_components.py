"""The demo model's VAE and text encoders: their trainers run, and the committed files work."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from opensora.errors import UserError
from opensora.models.text_encoders import TextConditioner
from opensora.presets import load_preset
from opensora.prompts import model_prompt
from opensora.refine.shapes_world import normalize_to_shapes_world
from training.cli import main
from training.demo.clips import to_tensor
from training.demo.evaluation import to_uint8
from training.demo.metrics import measure, psnr
from training.demo.shapes_world import render_clip, sample_spec
from training.demo.text_encoder_trainer import TextTrainConfig, train_text_encoders
from training.demo.vae_trainer import write_scale_factor

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "models" / "demo"


def _tiny_vae_preset(tmp_path: Path) -> Path:
    """The tiny preset with one GroupNorm group per level, so the block-mean init has enough channels per group."""
    path = tmp_path / "tiny.toml"
    path.write_text((REPO / "presets" / "tiny-random.toml").read_text().replace("norm_num_groups = 4", "norm_num_groups = 1"))
    return path


def test_train_vae_writes_loadable_weights_with_scale(tmp_path):
    preset_path = _tiny_vae_preset(tmp_path)
    out = tmp_path / "vae.safetensors"
    argv = ["train-vae", "--preset", str(preset_path), "--out", str(out), "--work-dir", str(tmp_path / "run"),
            "--steps", "2", "--batch-size", "1", "--crop-frames", "5", "--crop-size", "16", "--eval-clips", "1",
            "--eval-frames", "1", "--checkpoint-every", "1"]
    assert main(argv) == 0
    with safe_open(str(out), "pt") as f:
        scale = float(f.metadata()["scale_factor"])
    assert scale > 0
    preset = load_preset(str(preset_path))  # the TOML now carries the new scale
    assert preset.vae.scale_factor == pytest.approx(scale, rel=1e-5)
    from opensora.loading import load_vae_weights

    vae = load_vae_weights(out, preset, torch.float32, "cpu")
    assert vae.config.scale_factor == pytest.approx(scale, rel=1e-5)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert {"psnr_frame0", "psnr_all"} <= set(summary["eval_train_combos"])
    # Resuming a finished run trains nothing and keeps the result.
    assert main([*argv, "--resume", "auto", "--no-update-preset"]) == 0
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["resumed_from"] == 2


def test_train_vae_decoder_only_keeps_the_encoder_and_scale(tmp_path):
    preset_path = _tiny_vae_preset(tmp_path)
    small = ["--batch-size", "1", "--crop-frames", "5", "--crop-size", "16", "--eval-clips", "1", "--eval-frames", "1"]
    first = tmp_path / "vae.safetensors"
    assert main(["train-vae", "--preset", str(preset_path), "--out", str(first), "--work-dir", str(tmp_path / "a"),
                 "--steps", "2", *small]) == 0
    tuned = tmp_path / "decoder.safetensors"
    assert main(["train-vae", "--preset", str(preset_path), "--out", str(tuned), "--work-dir", str(tmp_path / "b"),
                 "--steps", "3", "--init", str(first), "--train", "decoder", "--image-fraction", "0.5", *small]) == 0
    before, after = load_file(str(first)), load_file(str(tuned))
    encoder_side = [k for k in before if k.startswith(("encoder.", "quant_conv."))]
    decoder_side = [k for k in before if k.startswith(("decoder.", "post_quant_conv."))]
    assert encoder_side and decoder_side
    assert all(torch.equal(before[k], after[k]) for k in encoder_side)
    assert sum(not torch.equal(before[k], after[k]) for k in decoder_side) > len(decoder_side) // 2
    with safe_open(str(first), "pt") as f, safe_open(str(tuned), "pt") as g:
        assert g.metadata()["scale_factor"] == f.metadata()["scale_factor"]


def test_train_vae_decoder_on_the_block_mean_encoder(tmp_path):
    """Only the decoder trains from the block-mean init: the latents stay the colour block means,
    with the init's posterior noise, and the scale is measured on them."""
    from opensora.loading import load_vae_weights
    from training.demo.clips import eval_clips
    from training.demo.vae_init import LOGVAR
    from training.demo.vae_trainer import initial_vae

    preset_path = _tiny_vae_preset(tmp_path)
    out = tmp_path / "vae.safetensors"
    assert main(["train-vae", "--preset", str(preset_path), "--out", str(out), "--work-dir", str(tmp_path / "run"),
                 "--steps", "2", "--init", "block_mean", "--train", "decoder",
                 "--batch-size", "1", "--crop-frames", "5", "--crop-size", "16", "--eval-clips", "1",
                 "--eval-frames", "1"]) == 0
    preset = load_preset(str(preset_path))
    torch.manual_seed(0)  # what the trainer seeds (--seed 0) before the parts the init leaves random
    start = initial_vae(preset.vae, "block_mean").model.state_dict()
    trained = load_file(str(out))
    assert all(torch.equal(start[k], trained[k]) for k in start if k.startswith(("encoder.", "quant_conv.")))
    assert any(not torch.equal(start[k], trained[k]) for k in start if k.startswith("decoder."))
    vae = load_vae_weights(out, preset, torch.float32, "cpu")
    vae.set_tiling(False)
    clip = eval_clips(1, 3, held_out=False, num_frames=5)
    with torch.no_grad():
        mean, logvar = vae.moments(clip)
    assert torch.allclose(logvar, torch.full_like(logvar, LOGVAR), atol=0.05)
    cell = clip[:, :, 1:5, :8, :8].mean(dim=(2, 3, 4))  # the second latent frame's first 4x8x8 cell
    assert torch.allclose(mean[0, :3, 1, 0, 0], cell[0], atol=0.05)
    # the scale is 1 / std of these latents, written into the preset
    assert 0.5 < preset.vae.scale_factor * mean.std().item() < 2.0


def test_train_vae_refuses_bad_init_train_and_image_fraction(tmp_path):
    from training.demo.vae_config import VAETrainConfig
    from training.demo.vae_trainer import train_vae

    vae = load_preset("demo").vae
    cases = [
        (VAETrainConfig(steps=1, train="decoder", init="random"), "train 'decoder' keeps the encoder as it starts: init must be 'block_mean'"),
        (VAETrainConfig(steps=1, train="encoder"), "train is 'encoder'; allowed: 'all', 'decoder'"),
        (VAETrainConfig(steps=1, image_fraction=1.5), "image_fraction is 1.5; allowed: 0.0 to 1.0"),
        (VAETrainConfig(steps=1, edge_weight=-1.0), "edge_weight is -1.0; allowed: 0.0 to 1000000.0"),
        (VAETrainConfig(steps=1, crop_frames=6), "crop_frames is 6; allowed: 4k\\+1 frames"),
        (VAETrainConfig(steps=1, schedule="step"), "schedule is 'step'; allowed: 'constant', 'cosine', 'linear'"),
        (VAETrainConfig(steps=1, init="weights.pt"), "init is 'weights.pt'; allowed: 'block_mean', 'random' or a VAE .safetensors"),
        (VAETrainConfig(steps=1, init=str(tmp_path / "missing.safetensors")), "missing.safetensors"),
    ]
    for cfg, message in cases:
        with pytest.raises(UserError, match=message):
            train_vae(vae, cfg, tmp_path / "v.safetensors", tmp_path, resume=False)
    assert not (tmp_path / "v.safetensors").exists()


def test_train_vae_flags_are_the_config_fields():
    import argparse
    import dataclasses

    from training.demo.commands import train_vae as command
    from training.demo.vae_config import VAETrainConfig

    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    flags = {option for action in parser._actions for option in action.option_strings}
    for f in dataclasses.fields(VAETrainConfig):
        assert "--" + f.name.replace("_", "-") in flags, f.name
    for removed in ("--anchor-weight", "--encoder-lr-scale", "--wake-channels", "--block-mean-logvar"):
        assert removed not in flags
    args = parser.parse_args(["--out", "v.safetensors", "--work-dir", "w", "--lr", "1e-3", "--keep-scale"])
    from training.dataclass_flags import dataclass_from_flags

    cfg = dataclass_from_flags(VAETrainConfig, args)
    assert (cfg.lr, cfg.keep_scale, cfg.steps) == (1e-3, True, VAETrainConfig().steps)  # unset flags keep the defaults


def test_train_vae_logs_metrics_and_status_and_resumes_where_it_stopped(tmp_path):
    """The finetune trainer's files: metrics.jsonl per logged step, status.json, train.log; a run cut
    after its step-2 checkpoint and resumed ends with the weights and log of an uninterrupted one."""
    import shutil

    preset_path = _tiny_vae_preset(tmp_path)
    argv = ["train-vae", "--preset", str(preset_path), "--batch-size", "1", "--crop-frames", "5", "--crop-size", "16",
            "--eval-clips", "1", "--eval-frames", "1", "--steps", "4", "--warmup-steps", "2", "--log-every", "1",
            "--checkpoint-every", "2", "--threads", "1", "--no-update-preset"]
    run = tmp_path / "run"
    assert main([*argv, "--out", str(tmp_path / "a.safetensors"), "--work-dir", str(run)]) == 0
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    lrs = [r["lr"] for r in rows]
    assert lrs[0] < lrs[1] and lrs[1] > lrs[2] > lrs[3]  # warmup, then the cosine decay
    status = json.loads((run / "status.json").read_text())
    assert (status["state"], status["step"], status["total_steps"]) == ("finished", 4, 4)
    assert "step 4/4 loss" in (run / "train.log").read_text()

    shutil.rmtree(run / "checkpoints" / "step-000004")  # as if killed after the step-2 checkpoint
    assert main([*argv, "--out", str(tmp_path / "b.safetensors"), "--work-dir", str(run), "--resume", "auto"]) == 0
    again = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in again] == [1, 2, 3, 4]
    assert [(r["lr"], r["loss"]) for r in again] == [(r["lr"], r["loss"]) for r in rows]
    a, b = load_file(str(tmp_path / "a.safetensors")), load_file(str(tmp_path / "b.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_edge_weights_single_out_the_outline():
    from training.demo.vae_loss import edge_weights

    spec = sample_spec(np.random.default_rng(3), held_out=False, num_frames=5, aspect_ratio="1:1")
    video = to_tensor(render_clip(spec))[None]
    weight = edge_weights(video, 20.0)
    assert weight.shape == (1, 1, 5, *video.shape[-2:])
    assert weight.mean().item() == pytest.approx(1.0, rel=1e-5)  # the loss keeps its scale
    # The object's centre row at its left edge is on the outline; the frame corner is flat background.
    cx, cy = spec.centres()[0]
    left = int(cx - spec.size / 2)
    outline, background = weight[0, 0, 0, int(cy), left].item(), weight[0, 0, 0, 0, 0].item()
    assert outline == pytest.approx(21 * background, rel=1e-5)
    assert edge_weights(video, 0.0).item() == 1.0


def test_write_scale_factor_edits_only_the_vae_table(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text('[mmdit]\nscale_factor = 3.0\n[vae]\nblock_out_channels = [8, 16]\nscale_factor = 1.0   # why\n[text]\n')
    write_scale_factor(path, 0.25)
    assert path.read_text() == '[mmdit]\nscale_factor = 3.0\n[vae]\nblock_out_channels = [8, 16]\nscale_factor = 0.25   # why\n[text]\n'
    write_scale_factor(path, 0.4686661)
    assert 'scale_factor = 0.468666   # why' in path.read_text()
    path.write_text('[vae]\nlatent_channels = 8\n')
    with pytest.raises(UserError, match=r"no single `scale_factor = ...` line in its \[vae\] table"):
        write_scale_factor(path, 0.5)


def test_text_encoders_train_and_reload(tmp_path):
    cfg = TextTrainConfig(steps=3, batch_size=8, num_captions=60, eval_captions=20)
    summary = train_text_encoders(cfg, tmp_path)
    assert "clip_colour" in summary["held_out_accuracy"]
    text = TextConditioner.from_pretrained(tmp_path / "t5", tmp_path / "clip", cfg.text)
    prompt = model_prompt("a red circle moving left on a black background", fps=12, motion_score=4)
    t5_ids = text.t5_tokenizer(prompt, padding="max_length", truncation=True, max_length=24)["input_ids"]
    clip_ids = text.clip_tokenizer(prompt, padding="max_length", truncation=True, max_length=24)["input_ids"]
    eos, pad = text.t5_tokenizer.eos_token_id, text.t5_tokenizer.pad_token_id
    assert len(t5_ids) == len(clip_ids) == 24
    assert t5_ids[t5_ids.index(eos) + 1:] == [pad] * (23 - t5_ids.index(eos))  # text </s> <pad>...
    assert clip_ids[0] == text.clip_tokenizer.bos_token_id  # <s> text </s> </s>...
    assert text.clip_tokenizer.pad_token_id == eos == text.clip.config.eos_token_id
    long = text.clip_tokenizer("red " * 40, padding="max_length", truncation=True, max_length=24)["input_ids"]
    assert len(long) == 24 and long[-1] == eos  # truncation keeps the end token CLIP pools at
    assert text.t5_tokenizer.convert_ids_to_tokens(text.t5_tokenizer("A RED zebra.")["input_ids"]) == [
        "a", "red", "<unk>", ".", "</s>"]
    txt, vec = text.encode([prompt, ""])
    assert txt.shape == (2, 24, 64) and vec.shape == (2, 64)


def _committed(*paths: str) -> None:
    missing = [p for p in paths if not (DEMO / p).exists()]
    if missing:
        pytest.skip(f"committed demo files missing: {missing}")


@pytest.fixture(scope="module")
def committed_vae_round_trip() -> tuple[np.ndarray, np.ndarray]:
    """A rendered 33-frame clip of a held-out combination and the committed VAE's reconstruction (uint8)."""
    preset = load_preset("demo")
    _committed(preset.files.vae.removeprefix("models/demo/"))
    from opensora.loading import load_vae_weights

    vae = load_vae_weights(REPO / preset.files.vae, preset, torch.float32, "cpu")
    spec = sample_spec(np.random.default_rng(123), held_out=True, aspect_ratio="1:1")
    clip = to_tensor(render_clip(spec))[None]
    with torch.no_grad():
        recon = vae.decode(vae.encode(clip, sample=False))
    assert recon.shape == clip.shape
    return to_uint8(clip[0]), to_uint8(recon[0])


def test_committed_vae_meets_i2v_target_on_first_frame(committed_vae_round_trip):
    clip, recon = committed_vae_round_trip
    assert psnr(recon[0], clip[0]) >= 25.0  # what i2v_head needs to keep the given frame


def test_committed_vae_keeps_colour_shape_and_motion(committed_vae_round_trip):
    clip, recon = committed_vae_round_trip
    expected, got = measure(clip), measure(recon)
    assert (got.colour, got.shape, got.motion, got.background) == (expected.colour, expected.shape, expected.motion, expected.background)


@pytest.fixture(scope="module")
def demo_text():
    _committed("t5/model.safetensors", "clip/model.safetensors")
    return TextConditioner.from_pretrained(DEMO / "t5", DEMO / "clip", load_preset("demo").text)


def _pooled(text, prompts):
    return text.encode([model_prompt(p, fps=12, motion_score=4) for p in prompts])[1]


def test_committed_encoders_separate_prompts(demo_text):
    vec = _pooled(demo_text, ["a red circle moving left on a black background", "a blue square moving up on a gray background"])
    assert not torch.allclose(vec[0], vec[1], atol=1e-3)
    assert torch.nn.functional.cosine_similarity(vec[0], vec[1], dim=0) < 0.9


def test_committed_encoders_agree_on_normalised_paraphrases(demo_text):
    first, _ = normalize_to_shapes_world("a red ball rolling leftwards on a black background")
    second, _ = normalize_to_shapes_world("Crimson circle moving to the left against a dark backdrop")
    assert first == second
    vec = _pooled(demo_text, [first, second])
    assert torch.equal(vec[0], vec[1])
