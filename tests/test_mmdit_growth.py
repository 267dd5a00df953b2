"""`python -m training grow-mmdit`: a deeper MMDiT that starts out computing what the smaller one did."""

import dataclasses

import pytest
import torch
from mmdit_weights import trained_looking_weights
from safetensors.torch import load_file, save_file

from opensora.errors import UserError
from opensora.models.mmdit import build_mmdit, mmdit_forward
from opensora.models.mmdit_convert import official_to_diffusers
from opensora.presets import PRESET_DIR, load_preset
from opensora.sampling.packing import image_position_ids
from training.cli import main
from training.demo.mmdit_growth import count_single_blocks, grow_single_blocks

SMALL = load_preset("tiny-random").mmdit  # 2 single blocks


def velocity(state, config):
    model = build_mmdit(config)
    model.load_state_dict(official_to_diffusers(state, config))
    g = torch.Generator().manual_seed(0)
    n, length = 12, 5
    img = torch.randn(2, n, config.in_channels, generator=g)
    cond = torch.randn(2, n, config.cond_channels, generator=g)
    txt = torch.randn(2, length, config.context_in_dim, generator=g)
    y_vec = torch.randn(2, config.vec_in_dim, generator=g)
    ids = image_position_ids(3, 4, 4, 2)  # 3 latent frames of 2x2 tokens = n
    with torch.no_grad():
        return mmdit_forward(model, img, cond, txt, y_vec, torch.tensor([0.9, 0.3]), ids)


def test_grown_model_predicts_exactly_what_the_small_one_did():
    small = trained_looking_weights(SMALL)
    deep = dataclasses.replace(SMALL, depth_single_blocks=5)
    grown = grow_single_blocks(small, deep)
    assert count_single_blocks(grown) == 5
    assert torch.equal(velocity(grown, deep), velocity(small, SMALL))
    # the new blocks are trainable, not empty: only their output projection starts at zero
    assert grown["single_blocks.4.v_mlp.weight"].abs().sum() > 0
    assert grown["single_blocks.4.linear2.weight"].abs().sum() == 0


def test_refuses_to_shrink_or_change_width():
    small = trained_looking_weights(SMALL)
    with pytest.raises(UserError, match="target has 2 single blocks and the weights already have 2"):
        grow_single_blocks(small, SMALL)
    wider = dataclasses.replace(SMALL, hidden_size=96, num_heads=3, depth_single_blocks=3)
    with pytest.raises(UserError, match=r"does not fit the target MMDiT .*only depth_single_blocks may differ"):
        grow_single_blocks(small, wider)


def test_command_writes_the_grown_file(tmp_path, capsys):
    source = tmp_path / "small.safetensors"
    save_file(trained_looking_weights(SMALL), source)
    preset_text = (PRESET_DIR / "tiny-random.toml").read_text()
    deep_preset = tmp_path / "deep.toml"
    deep_preset.write_text(preset_text.replace("depth_single_blocks = 2", "depth_single_blocks = 4"))
    out = tmp_path / "grown.safetensors"
    assert main(["grow-mmdit", "--weights", str(source), "--preset", str(deep_preset), "--out", str(out)]) == 0
    assert "2 -> 4 single blocks" in capsys.readouterr().out
    assert count_single_blocks(load_file(out)) == 4
    assert main(["grow-mmdit", "--weights", str(tmp_path / "missing.safetensors"), "--preset", str(deep_preset),
                 "--out", str(out)]) == 2
    assert "cannot read MMDiT weights" in capsys.readouterr().err
