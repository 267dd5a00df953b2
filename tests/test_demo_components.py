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
from training.text_encoder_trainer import TextTrainConfig, train_text_encoders
from training.demo_metrics import measure, psnr
from training.eval_demo import to_uint8
from training.vae_trainer import to_tensor, write_scale_factor
from training.shapes_world import render_clip, sample_spec

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
            "--eval-frames", "5", "--checkpoint-every", "1"]
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
    small = ["--batch-size", "1", "--crop-frames", "5", "--crop-size", "16", "--eval-clips", "1", "--eval-frames", "5"]
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
    with the posterior noise asked for, and the scale is measured on them."""
    from opensora.loading import load_vae_weights
    from training.vae_trainer import eval_clips, initial_vae

    preset_path = _tiny_vae_preset(tmp_path)
    out = tmp_path / "vae.safetensors"
    assert main(["train-vae", "--preset", str(preset_path), "--out", str(out), "--work-dir", str(tmp_path / "run"),
                 "--steps", "2", "--init", "block_mean", "--train", "decoder", "--block-mean-logvar", "-10",
                 "--batch-size", "1", "--crop-frames", "5", "--crop-size", "16", "--eval-clips", "1",
                 "--eval-frames", "5"]) == 0
    preset = load_preset(str(preset_path))
    torch.manual_seed(0)  # what the trainer seeds (--seed 0) before the parts the init leaves random
    start = initial_vae(preset.vae, "block_mean", -10.0).model.state_dict()
    trained = load_file(str(out))
    assert all(torch.equal(start[k], trained[k]) for k in start if k.startswith(("encoder.", "quant_conv.")))
    assert any(not torch.equal(start[k], trained[k]) for k in start if k.startswith("decoder."))
    vae = load_vae_weights(out, preset, torch.float32, "cpu")
    vae.set_tiling(False)
    clip = eval_clips(1, 3, held_out=False, num_frames=5)
    with torch.no_grad():
        mean, logvar = vae.moments(clip)
    assert torch.allclose(logvar, torch.full_like(logvar, -10.0), atol=0.05)
    cell = clip[:, :, 1:5, :8, :8].mean(dim=(2, 3, 4))  # the second latent frame's first 4x8x8 cell
    assert torch.allclose(mean[0, :3, 1, 0, 0], cell[0], atol=0.05)
    # the scale is 1 / std of these latents, written into the preset
    assert 0.5 < preset.vae.scale_factor * mean.std().item() < 2.0


def test_train_vae_wakes_quiet_channels_and_keeps_the_scale(tmp_path):
    from opensora.loading import load_vae_weights
    from training.vae_trainer import WAKE_CLIPS_SEED, eval_clips

    preset_path = _tiny_vae_preset(tmp_path)
    small = ["--batch-size", "1", "--crop-frames", "5", "--crop-size", "16", "--eval-clips", "1", "--eval-frames", "5",
             "--no-update-preset"]
    first = tmp_path / "vae.safetensors"  # block-mean start + 3 steps: channels 3+ barely move
    assert main(["train-vae", "--preset", str(preset_path), "--out", str(first), "--work-dir", str(tmp_path / "a"),
                 "--steps", "3", *small]) == 0
    woken = tmp_path / "woken.safetensors"
    assert main(["train-vae", "--preset", str(preset_path), "--out", str(woken), "--work-dir", str(tmp_path / "b"),
                 "--steps", "2", "--init", str(first), "--wake-channels", "2.5", "--keep-scale", "--edge-weight", "20",
                 *small]) == 0
    preset = load_preset(str(preset_path))
    with safe_open(str(woken), "pt") as f:
        assert float(f.metadata()["scale_factor"]) == pytest.approx(preset.vae.scale_factor, rel=1e-5)
    vae = load_vae_weights(woken, preset, torch.float32, "cpu")
    vae.set_tiling(False)
    clips = torch.cat([eval_clips(4, WAKE_CLIPS_SEED, held_out=False), eval_clips(4, WAKE_CLIPS_SEED + 1, held_out=True)])
    with torch.no_grad():
        means = torch.cat([vae.moments(c[None])[0] for c in clips]).transpose(0, 1).flatten(1)
    colour_std = means[:3].std(dim=1).mean().item()
    # every channel beyond rgb now varies on the colour channels' scale, centred
    assert torch.allclose(means[3:].std(dim=1), torch.full((means.shape[0] - 3,), colour_std), rtol=1e-3)
    # centred up to float32 sums over the clips' latents (1e-3 of the std on an AVX2-only CPU)
    assert means[3:].mean(dim=1).abs().max().item() < 1e-2 * colour_std


def test_train_vae_refuses_bad_init_train_and_image_fraction(tmp_path):
    from training.vae_trainer import VAETrainConfig, train_vae

    vae = load_preset("demo").vae
    cases = [
        (VAETrainConfig(steps=1, train="decoder", init="random"), "train 'decoder' keeps the encoder as it starts: init must be 'block_mean'"),
        (VAETrainConfig(steps=1, block_mean_logvar=3.0), "block_mean_logvar is 3.0; allowed: -20.0 to 0.0"),
        (VAETrainConfig(steps=1, train="encoder"), "train is 'encoder'; allowed: 'all', 'decoder'"),
        (VAETrainConfig(steps=1, image_fraction=1.5), "image_fraction is 1.5; allowed: 0.0 to 1.0"),
        (VAETrainConfig(steps=1, edge_weight=-1.0), "edge_weight is -1.0; allowed: 0 or more"),
        (VAETrainConfig(steps=1, wake_channels=-2.0), "wake_channels is -2.0; allowed: 0 \\(off\\) or more"),
        (VAETrainConfig(steps=1, wake_channels=2.0), "wake_channels rescales the latents of trained weights"),
        (VAETrainConfig(steps=1, init=str(tmp_path / "missing.safetensors")), "missing.safetensors"),
        (VAETrainConfig(steps=1, anchor_weight=-1.0), "anchor_weight is -1.0; allowed: 0 \\(off\\) or more"),
        (VAETrainConfig(steps=1, anchor_weight=1.0), "anchor_weight keeps the latents near those of trained weights"),
        (VAETrainConfig(steps=1, encoder_lr_scale=0.0), "encoder_lr_scale is 0.0; allowed: above 0 up to 1.0"),
    ]
    for cfg, message in cases:
        with pytest.raises(UserError, match=message):
            train_vae(vae, cfg, tmp_path / "v.safetensors", tmp_path, resume=False)


def test_edge_weights_single_out_the_outline():
    from training.vae_trainer import edge_weights

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


def test_anchor_measures_latent_drift_and_the_encoder_trains_slower(tmp_path):
    import copy

    from training.vae_trainer import VAETrainConfig, initial_vae, parameter_groups, sample_batch, vae_loss

    preset = load_preset(str(_tiny_vae_preset(tmp_path)))
    cfg = VAETrainConfig(batch_size=1, crop_frames=5, crop_size=16, anchor_weight=2.0, encoder_lr_scale=0.1)
    vae = initial_vae(preset.vae, "block_mean")
    vae.set_tiling(False)
    anchor = copy.deepcopy(vae).requires_grad_(False)
    batch = sample_batch(cfg, 0)
    _, parts = vae_loss(vae, batch, cfg, torch.Generator().manual_seed(0), anchor)
    assert parts["drift"] == 0.0  # same weights, same latents
    with torch.no_grad():
        vae.model.quant_conv.bias[0] += 1.0  # moves latent channel 0 by 1 everywhere
    moved, parts = vae_loss(vae, batch, cfg, torch.Generator().manual_seed(0), anchor)
    channels = preset.vae.latent_channels
    expected = preset.vae.scale_factor**2 / channels  # in scaled units, averaged over the channels
    assert parts["drift"] == pytest.approx(expected, rel=1e-4)
    reconstruction = cfg.mse_weight * parts["mse"] + cfg.kl_weight * parts["kl"]  # l1_weight is 0
    assert moved.item() == pytest.approx(reconstruction + 2.0 * expected, rel=1e-4)

    encoder, decoder = parameter_groups(vae, cfg)
    assert (encoder["lr_scale"], decoder["lr_scale"]) == (0.1, 1.0)
    assert len(encoder["params"]) + len(decoder["params"]) == len(list(vae.parameters()))


def test_train_vae_anchors_the_latents_and_slows_the_encoder(tmp_path, caplog):
    preset_path = _tiny_vae_preset(tmp_path)
    small = ["--batch-size", "1", "--crop-frames", "5", "--crop-size", "16", "--eval-clips", "1", "--eval-frames", "5",
             "--no-update-preset"]
    first = tmp_path / "vae.safetensors"
    assert main(["train-vae", "--preset", str(preset_path), "--out", str(first), "--work-dir", str(tmp_path / "a"),
                 "--steps", "2", *small]) == 0
    tuned = tmp_path / "anchored.safetensors"
    lr, scale = 0.05, 0.01
    with caplog.at_level("INFO", logger="training.vae_trainer"):
        assert main(["train-vae", "--preset", str(preset_path), "--out", str(tuned), "--work-dir", str(tmp_path / "b"),
                     "--steps", "2", "--init", str(first), "--anchor-weight", "1", "--encoder-lr-scale", str(scale),
                     "--lr", str(lr), *small]) == 0
    # The second step's loss compares the once-updated encoder with the frozen start: the drift is logged.
    logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("step 2/2")]
    assert logged and float(logged[0].split(" drift ")[1].split()[0]) > 0
    before, after = load_file(str(first)), load_file(str(tuned))
    moved = {k: (after[k] - before[k]).abs().max().item() for k in before}
    encoder_side = max(v for k, v in moved.items() if k.startswith(("encoder.", "quant_conv.")))
    decoder_side = max(v for k, v in moved.items() if k.startswith(("decoder.", "post_quant_conv.")))
    # Adam moves a weight by about the learning rate per step: two steps, with room for its moments.
    assert encoder_side < 3 * lr * scale < decoder_side


def test_write_scale_factor_edits_only_the_vae_table(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text('[mmdit]\nscale_factor = 3.0\n[vae]\nblock_out_channels = [8, 16]\nscale_factor = 1.0   # why\n[text]\n')
    write_scale_factor(path, 0.25)
    assert path.read_text() == '[mmdit]\nscale_factor = 3.0\n[vae]\nblock_out_channels = [8, 16]\nscale_factor = 0.250000   # why\n[text]\n'


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
    _committed("vae.safetensors")
    from opensora.loading import load_vae_weights

    preset = load_preset("demo")
    vae = load_vae_weights(DEMO / "vae.safetensors", preset, torch.float32, "cpu")
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
