"""The high-compression model: MMDiT variant (128 channels, patch 1) over the Video DC-AE."""

import json
import math

import torch

from conftest import FIXTURES
from opensora.models.dc_ae import DCAEConfig, VideoDCAE
from opensora.models.mmdit import MMDiTConfig, build_mmdit
from opensora.models.mmdit_convert import official_key_shapes
from opensora.pipeline import OpenSoraPipeline
from opensora.presets import CheckpointFiles, Preset, SamplerDefaults
from opensora.models.text_encoders import TextConfig
from opensora.sampling.denoise import GuidanceOptions

TINY_DC_AE = DCAEConfig(width_list=(8, 8, 16, 32, 32, 32), encoder_depth_list=(1,) * 6, decoder_depth_list=(1,) * 6,
                        latent_channels=16)
TINY_HC_MMDIT = MMDiTConfig(in_channels=16, vec_in_dim=16, context_in_dim=24, hidden_size=64, num_heads=2, depth=1,
                            depth_single_blocks=1, axes_dim=(8, 12, 12), patch_size=1)


def official_variant() -> tuple[MMDiTConfig, dict, int]:
    data = json.loads((FIXTURES / "mmdit_v2_dcae_keys.json").read_text())
    config = MMDiTConfig(**{k: v for k, v in data["config"].items() if k in MMDiTConfig.__dataclass_fields__})
    return config, {e["name"]: tuple(e["shape"]) for e in data["keys"]}, data["total_params"]


def test_full_size_variant_has_the_official_keys_and_parameter_count():
    config, theirs, total = official_variant()
    assert (config.in_channels, config.patch_size, config.latent_channels, config.cond_channels) == (128, 1, 128, 129)
    ours = official_key_shapes(config)  # built on the meta device and converted to the official names
    assert ours == theirs
    assert sum(math.prod(s) for s in ours.values()) == total == 11_891_971_200


def test_full_size_variant_takes_dc_ae_latents_token_per_position():
    config, _, _ = official_variant()
    with torch.device("meta"):
        model = build_mmdit(config)
    # one token per DC-AE latent position: 128 latent + 129 condition features in, 128 velocities out
    assert model.x_embedder.in_features == 128 + 129
    assert model.proj_out.out_features == DCAEConfig().latent_channels == 128


def test_tiny_dc_ae_path_samples_and_decodes_a_video():
    torch.manual_seed(0)
    dc_ae, transformer = VideoDCAE(TINY_DC_AE).eval(), build_mmdit(TINY_HC_MMDIT).eval()
    preset = Preset(name="tiny-hc", description="", weights="random", files=CheckpointFiles(), mmdit=TINY_HC_MMDIT,
                    vae=TINY_DC_AE, text=TextConfig(), buckets={}, sampler=SamplerDefaults())
    pipe = OpenSoraPipeline(preset, transformer, dc_ae, text_encoder=None)
    frames, height, width = 13, 64, 96  # 4k+1 as the official sampler: 4 latent frames
    with torch.no_grad():
        reference = dc_ae.encode(torch.rand(1, 3, 1, height, width) * 2 - 1)[0]
        noise = torch.randn(1, 16, TINY_DC_AE.latent_frames(frames), height // 32, width // 32)
        txt, y_vec = torch.randn(3, 5, 24), torch.randn(3, 16)
        latent = pipe.sample(noise, txt, y_vec, "i2v_head", [[reference]], GuidanceOptions(), num_steps=2)
        video = dc_ae.decode(latent)[:, :, :frames]  # 16 decoded frames, cut to the request
    assert latent.shape == (1, 16, 4, 2, 3)
    assert torch.equal(latent[0, :, :1], reference)  # the reference frame is put back before decoding
    assert video.shape == (1, 3, frames, height, width) and torch.isfinite(video).all()
