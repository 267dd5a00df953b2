"""The full-size architectures have exactly the official key set and parameter count."""

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from conftest import FIXTURES
from opensora.loading import vae_key_shapes
from opensora.models.mmdit import MMDiTConfig
from opensora.models.mmdit_convert import diffusers_to_official, official_key_shapes, official_to_diffusers
from opensora.presets import load_preset


def official_keys(name: str) -> tuple[dict, int]:
    data = json.loads((FIXTURES / name).read_text())
    return {e["name"]: tuple(e["shape"]) for e in data["keys"]}, data["total_params"]


@pytest.mark.parametrize("preset", ["opensora-v2-256px", "opensora-v2-768px"])
def test_mmdit_meta_matches_official_keys_and_count(preset):
    ours = official_key_shapes(load_preset(preset).mmdit)
    theirs, total = official_keys("mmdit_v2_keys.json")
    assert ours == theirs
    assert sum(math.prod(s) for s in ours.values()) == total == 11_891_390_528


def test_dcae_mmdit_variant_keys():
    data = json.loads((FIXTURES / "mmdit_v2_dcae_keys.json").read_text())
    config = MMDiTConfig(**{k: v for k, v in data["config"].items() if k in MMDiTConfig.__dataclass_fields__})
    theirs, total = official_keys("mmdit_v2_dcae_keys.json")
    ours = official_key_shapes(config)
    assert ours == theirs and sum(math.prod(s) for s in ours.values()) == total


def test_vae_meta_matches_official_keys_and_count():
    ours = vae_key_shapes(load_preset("opensora-v2-256px"))
    theirs, total = official_keys("hunyuan_vae_keys.json")
    assert ours == theirs
    assert sum(math.prod(s) for s in ours.values()) == total == 246_478_803


def test_conversion_round_trip_is_exact():
    data = json.loads((FIXTURES / "mmdit_tiny.json").read_text())["config"]
    config = MMDiTConfig(**{k: v for k, v in data.items() if k in MMDiTConfig.__dataclass_fields__})
    official = load_file(str(FIXTURES / "mmdit_tiny_weights.safetensors"))
    back = diffusers_to_official(official_to_diffusers(official, config), config)
    assert set(back) == set(official)
    for key, tensor in official.items():
        if key in ("img_in.bias", "cond_in.bias"):
            continue  # merged into one bias: only the sum survives
        assert torch.equal(back[key], tensor), key
    assert torch.allclose(back["img_in.bias"] + back["cond_in.bias"], official["img_in.bias"] + official["cond_in.bias"])
