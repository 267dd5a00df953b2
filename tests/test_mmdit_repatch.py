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

SMALL = load_preset("tiny-random").mmdit


def bigger_tokens(config):
    """The same network behind a VAE with half the spatial compression: twice the patch edge, so the
    same pixels per token and 4x the numbers in each."""
    return dataclasses.replace(config, patch_size=config.patch_size * 2, in_channels=config.in_channels * 4)


def test_blocks_are_kept_and_only_the_token_projections_change():
    old = trained_looking_weights(SMALL)
    target = bigger_tokens(SMALL)
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
    deeper = dataclasses.replace(bigger_tokens(SMALL), depth_single_blocks=SMALL.depth_single_blocks + 1)
    with pytest.raises(UserError, match=r"missing \['single_blocks.2.*only in_channels or patch_size may differ"):
        repatch_projections(old, deeper)
    wider_text = dataclasses.replace(SMALL, context_in_dim=SMALL.context_in_dim * 2)
    with pytest.raises(UserError, match=r"weight txt_in.weight .* does not fit the target MMDiT"):
        repatch_projections(old, wider_text)


def test_command_writes_weights_the_new_preset_loads(tmp_path, capsys):
    source = tmp_path / "old.safetensors"
    save_file(trained_looking_weights(SMALL), source)
    text = (PRESET_DIR / "tiny-random.toml").read_text()
    target = bigger_tokens(SMALL)
    new_preset = tmp_path / "big-tokens.toml"
    new_preset.write_text(text.replace(f"in_channels = {SMALL.in_channels}", f"in_channels = {target.in_channels}")
                          .replace(f"patch_size = {SMALL.patch_size}", f"patch_size = {target.patch_size}")
                          .replace("block_out_channels = [8, 16, 16, 16]",
                                   "block_out_channels = [8, 16, 16]\nspatial_compression = 4"))
    assert load_preset(str(new_preset)).mmdit.in_channels == target.in_channels
    out = tmp_path / "new.safetensors"
    assert main(["repatch-mmdit", "--weights", str(source), "--preset", str(new_preset), "--out", str(out)]) == 0
    assert f"token size {SMALL.in_channels} -> {target.in_channels}" in capsys.readouterr().out
    assert load_file(out)["img_in.weight"].shape[1] == target.in_channels
    assert main(["repatch-mmdit", "--weights", str(tmp_path / "missing.safetensors"), "--preset", str(new_preset),
                 "--out", str(out)]) == 2
    assert "cannot read MMDiT weights" in capsys.readouterr().err
