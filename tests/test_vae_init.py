"""The demo VAE's colour-preserving start: an exact block-mean autoencoder before any training."""

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from opensora.models.hunyuan_vae import HunyuanVAE
from opensora.presets import load_preset
from training.demo.metrics import measure
from training.demo.shapes_world import ClipSpec, render_clip
from opensora.errors import UserError
from training.demo.clips import to_tensor
from training.demo.vae_init import LOGVAR, init_block_mean_vae


def _clip(colour: str, background: str, num_frames: int = 9) -> torch.Tensor:
    spec = ClipSpec(shape="square", colour=colour, motion="right", background=background, aspect_ratio="1:1",
                    num_frames=num_frames, height=64, width=64, size=40.0, start_x=24.0, start_y=32.0, travel=16.0)
    return to_tensor(render_clip(spec))[None]


@pytest.fixture(scope="module")
def vae():
    torch.manual_seed(0)
    model = HunyuanVAE(load_preset("demo").vae)
    model.set_tiling(False)
    init_block_mean_vae(model.model)
    return model.eval()


@torch.no_grad()
def test_latent_holds_the_cell_means_of_each_causal_frame_group(vae):
    video = _clip("orange", "gray")
    mean, logvar = vae.moments(video)
    assert mean.shape == (1, 8, 3, 8, 8)
    # frame 0 alone, then frames 1-4 and 5-8, each averaged over 8x8 pixel cells
    groups = [video[:, :, :1], video[:, :, 1:5], video[:, :, 5:9]]
    for k, frames in enumerate(groups):
        expected = F.avg_pool2d(frames.mean(2), 8)
        assert (mean[:, :3, k] - expected).abs().max() < 0.02
    assert mean[:, 3:].abs().max() == 0  # free channels start unused
    assert torch.allclose(logvar, torch.full_like(logvar, LOGVAR))


@torch.no_grad()
@pytest.mark.parametrize("colour,background", [("red", "black"), ("cyan", "gray"), ("purple", "black")])
def test_decoding_keeps_the_colour_before_training(vae, colour, background):
    video = _clip(colour, background)
    mean, _ = vae.moments(video)
    recon = vae.model.decode(mean).sample.clamp(-1, 1)
    blocky = F.interpolate(F.avg_pool2d(video[:, :, 0], 8), scale_factor=8, mode="nearest")
    assert (recon[:, :, 0] - blocky).abs().max() < 0.1
    frames = ((recon[0].permute(1, 2, 3, 0) + 1) * 127.5).round().byte().numpy()
    measured = measure(frames)
    assert (measured.colour, measured.background) == (colour, background)


def test_too_few_channels_per_group_is_refused():
    config = replace(load_preset("demo").vae, norm_num_groups=8)  # 2 channels per group at width 16
    with pytest.raises(UserError, match=r"norm_num_groups=8 leaves 2 channels per group; .* \(norm_num_groups <= 2 at"):
        init_block_mean_vae(HunyuanVAE(config).model)


def test_unknown_init_is_refused(tmp_path):
    from training.demo.vae_config import VAETrainConfig
    from training.demo.vae_trainer import train_vae

    with pytest.raises(UserError, match="init is 'zeros'; allowed: 'block_mean', 'random'"):
        train_vae(load_preset("demo").vae, VAETrainConfig(steps=1, init="zeros"), tmp_path / "v.safetensors", tmp_path, resume=False)
