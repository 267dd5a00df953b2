"""`python -m training repatch-mmdit`: a trained MMDiT moved to another token size keeps its blocks."""

import dataclasses

import pytest
import torch
from mmdit_weights import trained_looking_weights
from safetensors.torch import load_file, save_file

from opensora.errors import UserError
from opensora.models.mmdit import build_mmdit
from opensora.models.mmdit_convert import diffusers_to_official
from opensora.presets import PRESET_DIR, load_preset
from training.cli import main
from training.mmdit_repatch import TOKEN_PROJECTIONS, repatch_projections

TARGET = load_preset("tiny-random").mmdit


def smaller_tokens(config):
    """The same network in front of a VAE with twice the spatial compression: half the patch edge, so
    the same pixels per token and a quarter of the numbers in each."""
    return dataclasses.replace(config, patch_size=config.patch_size // 2, in_channels=config.in_channels // 4)


SMALL = smaller_tokens(TARGET)


def test_blocks_are_kept_and_only_the_token_projections_change():
    old = trained_looking_weights(SMALL)
    target = TARGET
    new = repatch_projections(old, target)
    assert new["img_in.weight"].shape == (SMALL.hidden_size, target.in_channels)
    assert new["final_layer.linear.weight"].shape == (target.in_channels, SMALL.hidden_size)
    assert new["cond_in.weight"].shape[1] == target.cond_channels
    for key, tensor in new.items():
        if not key.startswith(TOKEN_PROJECTIONS):
            assert torch.equal(tensor, old[key]), key
    # the fresh projections are what a new model of the target shape would load
    reference = diffusers_to_official(build_mmdit(target).state_dict(), target)
    assert set(new) == set(reference)
    assert all(new[k].shape == reference[k].shape for k in new)


def test_refuses_other_differences():
    old = trained_looking_weights(SMALL)
    deeper = dataclasses.replace(TARGET, depth_single_blocks=SMALL.depth_single_blocks + 1)
    with pytest.raises(UserError, match=r"missing \['single_blocks.2.*only in_channels or patch_size may differ"):
        repatch_projections(old, deeper)
    wider_text = dataclasses.replace(SMALL, context_in_dim=SMALL.context_in_dim * 2)
    with pytest.raises(UserError, match=r"weight txt_in.weight .* does not fit the target MMDiT"):
        repatch_projections(old, wider_text)


def test_tokens_wider_than_the_model_are_refused():
    with pytest.raises(UserError, match=r"in_channels 256 \(numbers per image token\) must be at most hidden_size 64"):
        dataclasses.replace(TARGET, patch_size=TARGET.patch_size * 2, in_channels=TARGET.in_channels * 4)


def test_command_writes_weights_the_new_preset_loads(tmp_path, capsys):
    source = tmp_path / "old.safetensors"
    save_file(trained_looking_weights(SMALL), source)
    text = (PRESET_DIR / "tiny-random.toml").read_text()
    target = TARGET
    new_preset = tmp_path / "big-tokens.toml"  # tiny-random's MMDiT behind a VAE with 4x spatial compression
    new_preset.write_text(text.replace("block_out_channels = [8, 16, 16, 16]",
                                       "block_out_channels = [8, 16, 16]\nspatial_compression = 4"))
    assert load_preset(str(new_preset)).mmdit.in_channels == target.in_channels
    out = tmp_path / "new.safetensors"
    assert main(["repatch-mmdit", "--weights", str(source), "--preset", str(new_preset), "--out", str(out)]) == 0
    assert f"token size {SMALL.in_channels} -> {target.in_channels}" in capsys.readouterr().out
    assert load_file(out)["img_in.weight"].shape[1] == target.in_channels
    assert main(["repatch-mmdit", "--weights", str(tmp_path / "missing.safetensors"), "--preset", str(new_preset),
                 "--out", str(out)]) == 2
    assert "cannot read MMDiT weights" in capsys.readouterr().err
