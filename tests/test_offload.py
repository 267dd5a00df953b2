"""Memory profiles applied to the tiny pipeline on the CPU: every profile makes the same latent."""

import pytest
import torch

from opensora.errors import UserError
from opensora.memory.profiles import load_memory_profiles
from opensora.offload import FP8_STORAGE, apply_offload
from opensora.pipeline import OpenSoraPipeline
from opensora.sampling.denoise import GuidanceOptions


def generate(pipe, offload) -> tuple[torch.Tensor, torch.Tensor]:
    noise = torch.randn(1, 16, 3, 4, 8, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        with offload.encode():
            txt, y_vec = pipe.text_encoder.encode(["a blue square", "", ""])
        with offload.sample():
            latent = pipe.sample(noise, txt, y_vec, "t2v", [[]], GuidanceOptions(), 2)
        with offload.decode():
            video = pipe.vae.decode(latent)
    return latent, video


@pytest.fixture(scope="module")
def reference():
    pipe = OpenSoraPipeline.from_preset("tiny-random")
    return generate(pipe, apply_offload(pipe, "none", "cpu"))


def test_profiles_are_data_with_the_five_names():
    profiles = load_memory_profiles()
    assert list(profiles) == ["none", "model", "group", "sequential", "disk"]
    assert profiles["none"].relative_time == 1.0 and not profiles["none"].vae_temporal_tiling
    assert profiles["disk"].mmdit == "disk" and profiles["sequential"].mmdit == "leaf"


@pytest.mark.parametrize("profile", ["model", "group", "sequential", "disk"])
def test_every_profile_gives_the_same_latent(profile, reference, tmp_path):
    pipe = OpenSoraPipeline.from_preset("tiny-random")
    offload = apply_offload(pipe, profile, "cpu", offload_dir=tmp_path / "blocks" if profile == "disk" else None)
    latent, video = generate(pipe, offload)
    assert (latent - reference[0]).abs().max().item() <= 1e-5
    assert pipe.vae.temporal_tiling == offload.profile.vae_temporal_tiling
    if profile == "disk":
        files = sorted(p.name for p in (tmp_path / "blocks").iterdir())
        assert len(files) >= 5 and all(name.endswith(".safetensors") for name in files)  # 4 blocks + the rest
        # Between forwards the block weights are placeholders: the real ones are on disk.
        block = pipe.transformer.transformer_blocks[0].attn.to_q.weight
        assert block.shape == (64, 64)


def test_disk_files_are_removed_on_close():
    pipe = OpenSoraPipeline.from_preset("tiny-random")
    offload = apply_offload(pipe, "disk", "cpu")
    folder = offload.offload_dir
    assert any(folder.iterdir())
    offload.close()
    assert not folder.exists()


def test_fp8_storage_shrinks_the_weights_and_stays_close(reference):
    pipe = OpenSoraPipeline.from_preset("tiny-random")
    before = sum(p.numel() * p.element_size() for p in pipe.transformer.parameters())
    offload = apply_offload(pipe, "none", "cpu", fp8_mmdit=True)
    after = sum(p.numel() * p.element_size() for p in pipe.transformer.parameters())
    assert pipe.transformer.transformer_blocks[0].ff.net[2].weight.dtype == FP8_STORAGE
    # fp32 -> fp8 for the attention and MLP layers; adaLN modulation ("norm*"), embeddings stay fp32.
    assert after < 0.5 * before
    latent, _ = generate(pipe, offload)
    relative = (latent - reference[0]).norm() / reference[0].norm()
    assert 0 < relative.item() < 0.1


def test_unknown_profile_names_the_allowed_ones():
    with pytest.raises(UserError, match="unknown memory profile 'tiny'; allowed: auto, none, model, group, sequential, disk"):
        apply_offload(None, "tiny", "cpu")
