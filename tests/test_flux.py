"""FLUX.1-dev for text -> image -> video: official file layouts, conversion, the tiny sampler."""

import json
import math

import pytest
import torch
from diffusers.loaders.single_file_utils import convert_flux_transformer_checkpoint_to_diffusers
from safetensors.torch import save_file

from conftest import FIXTURES
from opensora.errors import UserError
from opensora.models.flux_image import (
    FLUX_DEV,
    TINY_FLUX_VAE,
    FluxVAE,
    FluxVAEConfig,
    flux_key_shapes,
    flux_text_to_image,
    flux_to_diffusers,
    flux_vae_key_shapes,
    flux_vae_to_diffusers,
    load_flux_transformer,
    load_flux_vae,
    tiny_flux_config,
    tiny_random_flux,
    unfused_to_bfl,
)
from opensora.models.mmdit import build_mmdit
from opensora.models.mmdit_convert import diffusers_to_official
from opensora.models.text_encoders import TextConditioner
from opensora.presets import load_preset


def official_flux_keys() -> tuple[dict[str, tuple[int, ...]], int]:
    data = json.loads((FIXTURES / "flux_dev_keys.json").read_text())
    return {e["name"]: tuple(e["shape"]) for e in data["keys"]}, data["total_params"]


def test_flux_dev_key_list_is_the_official_one():
    theirs, total = official_flux_keys()
    ours = flux_key_shapes(FLUX_DEV)
    assert ours == theirs
    assert sum(math.prod(s) for s in ours.values()) == total == 11_901_408_320


def test_conversion_consumes_every_official_key_and_fills_every_diffusers_parameter():
    theirs, _ = official_flux_keys()
    with torch.device("meta"):
        official = {name: torch.empty(shape) for name, shape in theirs.items()}
        model = build_mmdit(FLUX_DEV)
    converted = flux_to_diffusers(official, FLUX_DEV)
    assert {k: tuple(v.shape) for k, v in converted.items()} == {k: tuple(v.shape) for k, v in model.state_dict().items()}
    model.load_state_dict(converted, strict=True, assign=True)
    # every official tensor ends up somewhere: the parameter counts agree
    assert sum(v.numel() for v in converted.values()) == sum(math.prod(s) for s in theirs.values())


def test_conversion_puts_every_row_where_diffusers_own_converter_does():
    """Row ids instead of weights (one column is enough: both converters only cut and reorder rows)."""
    theirs, _ = official_flux_keys()
    official, offset = {}, 0
    for name, shape in theirs.items():
        official[name] = torch.arange(offset, offset + shape[0], dtype=torch.float64).reshape(-1, *([1] * (len(shape) > 1)))
        offset += shape[0]
    ours = flux_to_diffusers(dict(official), FLUX_DEV)
    leftover = dict(official)
    reference = convert_flux_transformer_checkpoint_to_diffusers(leftover)
    assert not leftover  # diffusers pops what it uses: nothing of the file is left over
    assert set(ours) == set(reference)
    for key in reference:
        assert torch.equal(ours[key], reference[key]), key


def test_autoencoder_file_layout_converts_to_every_diffusers_parameter():
    official = flux_vae_key_shapes(FluxVAEConfig())
    with torch.device("meta"):
        converted = flux_vae_to_diffusers({k: torch.empty(s) for k, s in official.items()})
        vae = FluxVAE(FluxVAEConfig())
    assert len(official) == len(converted) == 244
    assert {k: tuple(v.shape) for k, v in converted.items()} == {k: tuple(v.shape) for k, v in vae.model.state_dict().items()}


def test_each_autoencoder_tensor_lands_in_exactly_one_diffusers_tensor():
    official = flux_vae_key_shapes(TINY_FLUX_VAE)
    tagged = {name: torch.full(shape, float(i)) for i, (name, shape) in enumerate(official.items())}
    converted = flux_vae_to_diffusers(tagged, TINY_FLUX_VAE)
    assert sorted(v.flatten()[0].item() for v in converted.values()) == [float(i) for i in range(len(official))]
    assert set(converted) == set(FluxVAE(TINY_FLUX_VAE).model.state_dict())


def test_official_layout_files_load_unchanged(tmp_path):
    transformer, _ = tiny_random_flux()
    config = tiny_flux_config()
    bfl = unfused_to_bfl(diffusers_to_official(transformer.state_dict(), config), config)
    save_file({k: v.contiguous() for k, v in bfl.items()}, str(tmp_path / "flux1-dev.safetensors"))
    loaded = load_flux_transformer(tmp_path / "flux1-dev.safetensors", config, dtype=torch.float32)
    for key, value in transformer.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key

    generator = torch.Generator().manual_seed(0)
    ae = {k: torch.randn(s, generator=generator) for k, s in flux_vae_key_shapes(TINY_FLUX_VAE).items()}
    save_file(ae, str(tmp_path / "flux1-dev-ae.safetensors"))
    vae = load_flux_vae(tmp_path / "flux1-dev-ae.safetensors", TINY_FLUX_VAE, dtype=torch.float32)
    assert torch.equal(vae.model.decoder.conv_in.weight, ae["decoder.conv_in.weight"])
    assert torch.equal(vae.model.decoder.mid_block.attentions[0].to_q.weight, ae["decoder.mid.attn_1.q.weight"][:, :, 0, 0])

    del ae["decoder.mid.attn_1.q.weight"]
    save_file(ae, str(tmp_path / "broken-ae.safetensors"))
    with pytest.raises(UserError, match="1 missing keys: decoder.mid.attn_1.q.weight"):
        load_flux_vae(tmp_path / "broken-ae.safetensors", TINY_FLUX_VAE)


@pytest.fixture(scope="module")
def tiny_text():
    preset = load_preset("tiny-random")
    text = TextConditioner.random(preset.text, preset.mmdit.context_in_dim, preset.mmdit.vec_in_dim, preset.seed + 1)
    with torch.no_grad():
        return text.encode(["a red fox running through fresh snow"])


def test_tiny_flux_draws_a_deterministic_image_of_the_right_size(tiny_text):
    preset = load_preset("tiny-random")
    transformer, vae = tiny_random_flux(preset.mmdit.context_in_dim, preset.mmdit.vec_in_dim)
    txt, vec = tiny_text
    first = flux_text_to_image(transformer, vae, txt, vec, height=48, width=80, num_steps=3, seed=7)
    again = flux_text_to_image(transformer, vae, txt, vec, height=48, width=80, num_steps=3, seed=7)
    other_seed = flux_text_to_image(transformer, vae, txt, vec, height=48, width=80, num_steps=3, seed=8)
    other_guidance = flux_text_to_image(transformer, vae, txt, vec, 48, 80, 3, guidance=1.0, seed=7)
    assert first.shape == (3, 48, 80) and first.dtype == torch.float32
    assert first.min() >= -1 and first.max() <= 1 and first.std() > 0
    assert torch.equal(first, again)
    assert not torch.equal(first, other_seed)
    assert not torch.equal(first, other_guidance)  # the guidance scale reaches the model


@pytest.mark.parametrize("height, width", [(40, 80), (48, 0), (48, 8)])
def test_image_sizes_flux_cannot_draw_are_refused(tiny_text, height, width):
    transformer, vae = tiny_random_flux()
    with pytest.raises(UserError, match="FLUX image (height|width) .* is not allowed: use a multiple of 16"):
        flux_text_to_image(transformer, vae, *tiny_text, height=height, width=width, num_steps=1)
