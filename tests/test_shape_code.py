"""Shape codes: the latent channels the demo VAE trainer can make name the object's shape."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from opensora.errors import UserError
from opensora.presets import load_preset
from training.demo.shape_code import SHAPE_CODE_AMPLITUDE, latent_coverage, read_shape, shape_code_channels, shape_code_target
from training.demo.shapes_world import ClipSpec, render_clip, render_coverage

REPO = Path(__file__).resolve().parents[1]


def test_latent_coverage_groups_frames_causally_and_cells_by_area():
    coverage = torch.zeros(1, 9, 16, 16)
    coverage[0, 0, :8, :8] = 1.0  # frame 0: the top-left cell, fully
    coverage[0, 1:3, 8:, 8:] = 1.0  # frames 1-2 of the group 1-4: the bottom-right cell, half the time
    coverage[0, 5:9, :4, :] = 1.0  # frames 5-8: the top half of the top row of cells
    cells = latent_coverage(coverage, time_compression=4, spatial_compression=8)
    assert cells.shape == (1, 3, 2, 2)
    assert cells[0, 0].tolist() == [[1.0, 0.0], [0.0, 0.0]]
    assert cells[0, 1].tolist() == [[0.0, 0.0], [0.0, 0.5]]
    assert cells[0, 2].tolist() == [[0.5, 0.5], [0.0, 0.0]]


def test_target_puts_the_coverage_in_the_shape_channel_and_reads_back():
    spec = ClipSpec(colour="red", shape="square", motion="right", background="black", aspect_ratio="1:1",
                    num_frames=5, height=32, width=32, size=20.0, start_x=12.0, start_y=12.0, travel=8.0)
    coverage = torch.from_numpy(render_coverage(spec))
    # The coverage is what the frames show: background where 0, the colour where 1.
    frames = render_clip(spec)
    assert np.array_equal(frames[..., 0] > 127, coverage.numpy() > 0.5)
    target = shape_code_target(torch.stack([coverage, coverage]), ["square", "triangle"], 4, 8)
    assert target.shape == (2, 3, 2, 4, 4)
    square, triangle = 1, 2  # SHAPES order: circle, square, triangle
    assert target[0, square, 0, 1, 1].item() == pytest.approx(SHAPE_CODE_AMPLITUDE)  # frame 0 covers it fully
    assert target[0, [0, 2]].abs().max().item() == 0.0
    assert torch.equal(target[1, triangle], target[0, square])
    latents = torch.cat([torch.randn(2, 5, 2, 4, 4) * 0.1, target], dim=1)  # 8 channels, the code last
    assert shape_code_channels(8) == slice(5, 8)
    assert read_shape(latents, 8) == ["square", "triangle"]


def test_vae_loss_adds_the_code_error(tmp_path):
    from training.demo.vae_batches import sample_batch
    from training.demo.vae_config import VAETrainConfig
    from training.demo.vae_loss import vae_loss
    from training.demo.vae_trainer import initial_vae

    path = tmp_path / "tiny.toml"
    path.write_text((REPO / "presets" / "tiny-random.toml").read_text().replace("norm_num_groups = 4", "norm_num_groups = 1"))
    preset = load_preset(str(path))
    cfg = VAETrainConfig(batch_size=2, crop_frames=5, crop_size=32, image_fraction=0.0, shape_code_weight=3.0)
    vae = initial_vae(preset.vae, "block_mean")
    vae.set_tiling(False)
    batch = sample_batch(cfg, 0)
    assert batch.coverage.shape == (2, 5, 32, 32) and len(batch.shapes) == 2
    loss, parts = vae_loss(vae, batch, cfg, torch.Generator().manual_seed(0))
    mean, _ = vae.moments(batch.video)
    code = shape_code_channels(preset.vae.latent_channels)
    target = shape_code_target(batch.coverage, batch.shapes, 4, 8)
    expected = (mean[:, code] * preset.vae.scale_factor - target).pow(2).mean().item()
    assert parts["code"] == pytest.approx(expected, rel=1e-5) and expected > 0
    reconstruction = cfg.mse_weight * parts["mse"] + cfg.kl_weight * parts["kl"]
    assert loss.item() == pytest.approx(reconstruction + 3.0 * expected, rel=1e-5)


def test_train_vae_refuses_bad_shape_code_settings(tmp_path):
    from training.demo.vae_config import VAETrainConfig
    from training.demo.vae_trainer import train_vae

    vae = load_preset("demo").vae
    cases = [
        (VAETrainConfig(steps=1, shape_code_weight=-1.0), "shape_code_weight is -1.0; allowed: 0.0 to 1000.0"),
        (VAETrainConfig(steps=1, shape_code_weight=1.0, train="decoder"), "shape_code_weight teaches the encoder"),
        (VAETrainConfig(steps=1, shape_code_weight=1.0, code_blur=1.5), "code_blur is 1.5; allowed: 0.0 to 1.0"),
        (VAETrainConfig(steps=1, code_blur_cells=4), "code_blur_cells is 4; allowed: an odd number from 1 to 15"),
        (VAETrainConfig(steps=1, code_blur_noise=-0.5), "code_blur_noise is -0.5; allowed: 0.0 to 10.0"),
    ]
    for cfg, message in cases:
        with pytest.raises(UserError, match=message):
            train_vae(vae, cfg, tmp_path / "v.safetensors", tmp_path, resume=False)
    three = load_preset("demo").vae
    three.latent_channels = 3
    for cfg in (VAETrainConfig(steps=1, shape_code_weight=1.0), VAETrainConfig(steps=1, code_blur=0.5)):
        with pytest.raises(UserError, match="the shape code needs more than 3 latent channels .* the preset has 3"):
            train_vae(three, cfg, tmp_path / "v.safetensors", tmp_path, resume=False)


def test_code_blur_smooths_only_the_other_channels_of_the_chosen_clips():
    from training.demo.vae_loss import blur_uncoded_channels

    z = torch.zeros(2, 8, 1, 5, 5)
    z[:, :, 0, 2, 2] = 9.0  # one bright cell in every channel
    out = blur_uncoded_channels(z, 1.0, torch.Generator().manual_seed(0))
    assert out[:, :5, 0, 2, 2].tolist() == [[1.0] * 5] * 2  # spread over its 3x3 neighbourhood
    assert out[:, :5, 0, 1, 1].tolist() == [[1.0] * 5] * 2
    assert torch.equal(out[:, 5:], z[:, 5:])  # the code stays sharp
    assert torch.equal(blur_uncoded_channels(z, 0.0, torch.Generator().manual_seed(0)), z)
    half = blur_uncoded_channels(z, 0.5, torch.Generator().manual_seed(1))  # this seed draws 0.76, 0.28
    assert torch.equal(half[0], z[0]) and not torch.equal(half[1], z[1])


def test_code_blur_window_and_noise_reach_only_the_other_channels_of_the_chosen_clips():
    from training.demo.vae_loss import blur_uncoded_channels

    z = torch.zeros(2, 8, 1, 9, 9)
    z[:, :, 0, 4, 4] = 25.0
    wide = blur_uncoded_channels(z, 1.0, torch.Generator().manual_seed(0), cells=5)
    assert wide[0, 0, 0, 2:7, 2:7].eq(1.0).all() and wide[0, 0, 0, 1].eq(0.0).all()  # 25 over 5x5 cells
    noisy = blur_uncoded_channels(z, 1.0, torch.Generator().manual_seed(0), cells=5, noise_std=0.5)
    noise = noisy - wide
    assert 0.4 < noise[:, :5].std().item() < 0.6
    assert torch.equal(noisy[:, 5:], z[:, 5:])
    assert torch.equal(blur_uncoded_channels(z, 1.0, torch.Generator().manual_seed(0), cells=1), z)


def test_data_workers_render_the_same_batches_as_the_loop():
    from training.demo.vae_batches import batches_from, sample_batch
    from training.demo.vae_config import VAETrainConfig

    cfg = VAETrainConfig(steps=4, batch_size=2, crop_frames=5, crop_size=16, image_fraction=0.5, seed=3, data_workers=2)
    batches = list(batches_from(cfg, start=1))
    assert len(batches) == 3
    for step, batch in zip(range(1, 4), batches):
        expected = sample_batch(cfg, step)
        assert torch.equal(batch.video, expected.video) and torch.equal(batch.coverage, expected.coverage)
        assert batch.shapes == expected.shapes


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown when there is no GPU")
def test_train_vae_on_cuda_without_a_gpu_says_so(tmp_path):
    from training.demo.vae_config import VAETrainConfig
    from training.demo.vae_trainer import train_vae

    with pytest.raises(UserError, match=r"device 'cuda': no CUDA GPU is usable here .*; use --device cpu"):
        train_vae(load_preset("demo").vae, VAETrainConfig(steps=1, device="cuda"), tmp_path / "v.safetensors",
                  tmp_path, resume=False)


def test_train_vae_with_a_shape_code_reports_how_often_the_code_reads_right(tmp_path):
    from training.cli import main

    path = tmp_path / "tiny.toml"
    path.write_text((REPO / "presets" / "tiny-random.toml").read_text().replace("norm_num_groups = 4", "norm_num_groups = 1"))
    argv = ["train-vae", "--preset", str(path), "--out", str(tmp_path / "vae.safetensors"), "--work-dir", str(tmp_path / "run"),
            "--steps", "2", "--batch-size", "1", "--crop-frames", "5", "--crop-size", "16", "--eval-clips", "3",
            "--eval-frames", "1", "--shape-code-weight", "1", "--code-blur", "0.5", "--no-update-preset"]
    assert main(argv) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    read = summary["shape_code_read_right"]
    assert set(read) == {"train_combos", "held_out_combos"}
    assert all(value in (0.0, 1 / 3, 2 / 3, 1.0) for value in read.values())  # 3 clips each
    assert summary["config"]["shape_code_weight"] == 1.0 and summary["config"]["code_blur"] == 0.5


def test_code_blur_trains_only_the_decoder_of_a_fixed_encoder(tmp_path):
    from safetensors.torch import load_file

    from training.cli import main

    path = tmp_path / "tiny.toml"
    path.write_text((REPO / "presets" / "tiny-random.toml").read_text().replace("norm_num_groups = 4", "norm_num_groups = 1"))
    small = ["--batch-size", "1", "--crop-frames", "5", "--crop-size", "16", "--eval-clips", "1", "--eval-frames", "1",
             "--no-update-preset"]
    first = tmp_path / "vae.safetensors"
    assert main(["train-vae", "--preset", str(path), "--out", str(first), "--work-dir", str(tmp_path / "a"),
                 "--steps", "1", "--shape-code-weight", "1", *small]) == 0
    tuned = tmp_path / "decoder.safetensors"
    assert main(["train-vae", "--preset", str(path), "--out", str(tuned), "--work-dir", str(tmp_path / "b"),
                 "--steps", "2", "--init", str(first), "--train", "decoder", "--code-blur", "1.0", *small]) == 0
    before, after = load_file(str(first)), load_file(str(tuned))
    encoder = [k for k in before if k.startswith(("encoder.", "quant_conv."))]
    assert encoder and all(torch.equal(before[k], after[k]) for k in encoder)
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("decoder."))
