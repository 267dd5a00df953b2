"""Open-Sora 1.2 models: the official key layouts, loading with named mismatches, frame-count rules."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import REPO
from opensora.errors import UserError
from opensora.models.stdit3 import STDiT3Config, build_stdit3, load_stdit3
from opensora.models.stdit3 import official_key_shapes as stdit3_keys
from opensora.models.vae_v1_2 import VAEV12Config, build_vae_v1_2, check_num_frames, latent_frames, load_vae_v1_2
from opensora.models.vae_v1_2 import official_key_shapes as vae_keys
from opensora.parity_v1_2 import load_tiny_vae, stdit3_config, vae_config

FIXTURES = REPO / "tests" / "fixtures" / "opensora_v1_2"


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors on a shared CPU: one thread is ~10x faster than two."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _listed(name: str) -> tuple[dict, dict[str, tuple[int, ...]]]:
    data = json.loads((FIXTURES / name).read_text())
    return data, {e["name"]: tuple(e["shape"]) for e in data["keys"]}


def test_full_size_stdit3_has_the_official_keys_and_parameter_count():
    data, listed = _listed("stdit3_keys.json")
    assert stdit3_keys(STDiT3Config()) == listed
    with torch.device("meta"):
        model = build_stdit3(STDiT3Config())
    assert sum(p.numel() for p in model.parameters()) == data["total_params"] == 1_207_643_972
    assert sum(t.numel() for t in model.state_dict().values()) == data["total_elements_state_dict"]


def test_full_size_vae_has_the_official_keys_and_parameter_count():
    data, listed = _listed("vae_v1_2_keys.json")
    assert vae_keys(VAEV12Config()) == listed
    with torch.device("meta"):
        vae = build_vae_v1_2(VAEV12Config())
    assert sum(p.numel() for p in vae.parameters()) == data["total_params"] == 393_341_007
    assert sum(p.numel() for p in vae.spatial_vae.parameters()) == data["counts"]["spatial_vae"]["elements"]


def test_stdit3_loads_the_official_layout_and_names_mismatches(tmp_path):
    config = stdit3_config(json.loads((FIXTURES / "stdit3_tiny.json").read_text())["config"])
    weights = load_file(str(FIXTURES / "stdit3_tiny_weights.safetensors"))
    model = load_stdit3(FIXTURES / "stdit3_tiny_weights.safetensors", config)
    assert torch.equal(model.y_embedder.y_embedding, weights["y_embedder.y_embedding"])
    assert not model.rope.freqs.requires_grad

    broken = dict(weights)
    broken["spatial_blocks.0.attn.qkv.weightx"] = broken.pop("spatial_blocks.0.attn.qkv.weight")
    broken["final_layer.linear.bias"] = torch.zeros(3)
    save_file(broken, str(tmp_path / "bad.safetensors"))
    with pytest.raises(UserError) as err:
        load_stdit3(tmp_path / "bad.safetensors", config)
    message = str(err.value)
    assert "1 missing keys: spatial_blocks.0.attn.qkv.weight" in message
    assert "1 unexpected keys: spatial_blocks.0.attn.qkv.weightx" in message
    assert "final_layer.linear.bias [3] (expected [32])" in message


def test_vae_loads_the_official_layout_with_or_without_its_normalisation_buffers(tmp_path):
    config = vae_config(json.loads((FIXTURES / "vae_tiny.json").read_text())["config"])
    reference = load_tiny_vae(FIXTURES)
    video = torch.rand(1, 3, 17, 24, 32) * 2 - 1
    expected = reference.encode(video, sample=False)

    vae = load_vae_v1_2(FIXTURES / "vae_tiny_weights.safetensors", config)
    assert torch.equal(vae.encode(video, sample=False), expected)

    weights = load_file(str(FIXTURES / "vae_tiny_weights.safetensors"))
    del weights["scale"], weights["shift"]
    save_file(weights, str(tmp_path / "no_buffers.safetensors"))
    vae = load_vae_v1_2(tmp_path / "no_buffers.safetensors", config)
    assert torch.equal(vae.scale.flatten(), torch.tensor(config.scale))
    assert torch.equal(vae.encode(video, sample=False), expected)

    del weights["temporal_vae.decoder.conv_out.conv.bias"]
    save_file(weights, str(tmp_path / "bad.safetensors"))
    with pytest.raises(UserError, match="1 missing keys: temporal_vae.decoder.conv_out.conv.bias"):
        load_vae_v1_2(tmp_path / "bad.safetensors", config)


def test_latent_frames_follow_the_official_17_frame_chunking():
    table = json.loads((FIXTURES / "vae_tiny.json").read_text())
    table = next(v for k, v in table.items() if k.startswith("get_latent_size_table_full_model"))
    assert {int(f): latent_frames(int(f)) for f in table} == {int(f): size[0] for f, size in table.items()}


def test_decoding_gives_the_requested_frame_count_and_refuses_a_mismatched_latent():
    vae = load_tiny_vae(FIXTURES)
    with torch.no_grad():
        for frames in (1, 17, 18, 40):
            latent = vae.encode(torch.zeros(1, 3, frames, 16, 16), sample=False)
            assert latent.shape[2] == latent_frames(frames)
            assert vae.decode(latent, frames).shape == (1, 3, frames, 16, 16)
        with pytest.raises(UserError, match="a latent of 12 frames cannot decode to 34 frames \\(needs 10\\)"):
            vae.decode(torch.zeros(1, 4, 12, 2, 2), 34)


@pytest.mark.parametrize("frames", [1, 17, 34, 40, 51, 102, 204, 408])
def test_accepted_frame_counts(frames):
    assert check_num_frames(frames, max_frames=408) == frames


@pytest.mark.parametrize("frames, fragment", [(16, "num_frames 16 is not supported"), (2, "use 1 (an image) or 17..408"),
                                               (409, "num_frames 409"), (0, "num_frames 0")])
def test_rejected_frame_counts_name_the_value_and_the_range(frames, fragment):
    with pytest.raises(UserError, match=fragment.replace("(", "\\(").replace(")", "\\)")):
        check_num_frames(frames, max_frames=408)
