"""Video DC-AE: parity with the official code, the official key layout, the frame-count rule."""

import json
import math

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import FIXTURES
from opensora.errors import UserError
from opensora.models.dc_ae import DCAEConfig, VideoDCAE, dc_ae_key_shapes, load_dc_ae
from opensora.parity import ATOL
from opensora.parity_dc_ae import dc_ae_checks, load_tiny_dc_ae

SMALL = dict(width_list=(8, 8, 16, 32, 32, 32), encoder_depth_list=(1,) * 6, decoder_depth_list=(1,) * 6, latent_channels=8)


def test_every_dc_ae_check_is_within_tolerance_of_the_official_code():
    checks = dc_ae_checks(FIXTURES)
    expected = {
        "dc_ae_keys", "dc_ae_encode", "dc_ae_decode", "dc_ae_scaled_encode", "dc_ae_scaled_decode",
        "dc_ae_temporal_tiled_encode", "dc_ae_temporal_tiled_decode", "dc_ae_spatial_tiled_encode",
        "dc_ae_spatial_tiled_decode",
    }
    assert set(checks) == expected
    for name, check in checks.items():
        assert check is not None and check.ok, (name, check and check.max_error)
        assert check.max_error < ATOL, name


def test_full_size_model_has_the_official_keys_and_parameter_count():
    data = json.loads((FIXTURES / "dc_ae_keys.json").read_text())
    ours = dc_ae_key_shapes(DCAEConfig())
    assert ours == {e["name"]: tuple(e["shape"]) for e in data["keys"]}
    assert sum(math.prod(s) for s in ours.values()) == data["total_params"] == 459_462_147


def test_official_layout_file_loads_unchanged_and_decodes_like_the_fixture(tmp_path):
    reference = load_tiny_dc_ae(FIXTURES)
    model = load_dc_ae(FIXTURES / "dc_ae_tiny_weights.safetensors", reference.config)
    latent = load_file(str(FIXTURES / "dc_ae_tiny_io.safetensors"))["video.latent"].clone()
    with torch.no_grad():
        assert torch.equal(model.decode(latent), reference.decode(latent))

    state = load_file(str(FIXTURES / "dc_ae_tiny_weights.safetensors"))
    dropped = "decoder.project_out.op_list.0.bias"
    del state[dropped]
    state["encoder.extra.weight"] = torch.zeros(1)
    save_file(state, str(tmp_path / "bad.safetensors"))
    with pytest.raises(UserError, match="1 missing keys: decoder.project_out.op_list.0.bias") as err:
        load_dc_ae(tmp_path / "bad.safetensors", reference.config)
    assert "encoder.extra.weight" in str(err.value)


def test_encoded_and_decoded_frames_follow_the_frame_rule():
    config = DCAEConfig(**SMALL)
    model = VideoDCAE(config).eval()
    for frames in (1, 8, 12):
        assert config.check_frames(frames) == frames
        with torch.no_grad():
            latent = model.encode(torch.zeros(1, 3, frames, 64, 32))
            video = model.decode(latent)
        assert latent.shape == (1, 8, config.encoded_frames(frames), 2, 1)
        assert video.shape == (1, 3, config.decoded_frames(latent.shape[2]), 64, 32) == (1, 3, frames, 64, 32)


def test_sampled_latent_frames_are_the_official_high_compression_counts():
    config = DCAEConfig()
    # high_compression.py keeps is_causal_vae=True: 129 frames -> 33 latent frames -> 132 decoded, cut to 129
    assert [config.latent_frames(n) for n in (1, 5, 33, 128, 129)] == [1, 2, 9, 32, 33]
    for frames in (1, 5, 9, 33, 128, 129):
        assert config.decoded_frames(config.latent_frames(frames)) >= frames


@pytest.mark.parametrize("frames", [2, 9, 33, 129, "8"])
def test_frame_counts_the_encoder_cannot_take_are_refused_with_the_rule(frames):
    with pytest.raises(UserError, match=f"the Video DC-AE cannot encode {frames!r} frames: it takes 1 or a multiple of 4"):
        DCAEConfig().check_frames(frames)


def test_encode_refuses_clips_it_cannot_take_apart():
    model = VideoDCAE(DCAEConfig(**SMALL))
    with pytest.raises(UserError, match="cannot encode 9 frames"):
        model.encode(torch.zeros(1, 3, 9, 64, 64))
    with pytest.raises(UserError, match="cannot encode 48x64 pixels: height and width must be multiples of 32"):
        model.encode(torch.zeros(1, 3, 8, 48, 64))


def test_inconsistent_configs_are_refused():
    with pytest.raises(UserError, match="spatial_compression 16 must be 2\\^\\(stages - 1\\) = 32"):
        DCAEConfig(spatial_compression=16)
    with pytest.raises(UserError, match="latent_channels 100 must divide the last width 1024"):
        DCAEConfig(latent_channels=100)
    with pytest.raises(UserError, match="unknown block types"):
        DCAEConfig(block_type=("ResBlock",) * 5 + ("Attention",))
    with pytest.raises(UserError, match="tiles of 160 px / 32 frames and their strides at overlap 0.25 \\(120 px"):
        DCAEConfig(spatial_tile_size=160)
    with pytest.raises(UserError, match="attention stage widths \\[16\\] must be multiples of 32"):
        DCAEConfig(width_list=(8, 8, 16, 16, 32, 32), latent_channels=16)


def test_scaling_is_a_config_value_and_off_for_inference():
    assert DCAEConfig().scaling_factor is None
    assert DCAEConfig().training_scaling_factor == 0.493
    unscaled = VideoDCAE(DCAEConfig(**SMALL)).eval()
    scaled = VideoDCAE(DCAEConfig(**SMALL, scaling_factor=0.493)).eval()
    scaled.load_state_dict(unscaled.state_dict())
    video = torch.rand(1, 3, 4, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(scaled.encode(video) * 0.493, unscaled.encode(video), atol=1e-6)


def test_set_tiling_leaves_the_callers_config_alone():
    config = DCAEConfig(**SMALL)
    model = VideoDCAE(config)
    model.set_tiling(False, False, 128, 16)
    assert (config.spatial_tiling, config.spatial_tile_size) == (True, 256)
    assert (model.config.spatial_tiling, model.config.spatial_tile_size, model.config.temporal_tile_size) == (False, 128, 16)
