"""`python -m training repatch-mmdit`: a trained MMDiT moved to another token size keeps its blocks."""

import dataclasses

import pytest
import torch
from mmdit_weights import trained_looking_weights
from safetensors.torch import load_file, save_file

from opensora.errors import UserError
from opensora.loading import load_components
from opensora.models.mmdit import build_mmdit, mmdit_forward
from opensora.models.mmdit_convert import diffusers_to_official, official_to_diffusers
from opensora.presets import PRESET_DIR, load_preset
from opensora.sampling.packing import image_position_ids, pack, unpack
from training.cli import main
from training.mmdit_repatch import TOKEN_PROJECTIONS, fit_token_map, inherit_projections, repatch_projections
from training.vae_trainer import initial_vae

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


def _model(config, state):
    model = build_mmdit(config)
    model.load_state_dict(official_to_diffusers(state, config))
    return model.eval()


def test_inherited_projections_compute_the_old_model_through_the_token_map():
    """Tokens of the new VAE that are an exact linear function of the old ones: the new model's
    velocity is the old model's, mapped back."""
    config = TARGET
    old = trained_looking_weights(config)
    generator = torch.Generator().manual_seed(3)
    features = config.in_channels
    mix = torch.eye(features) + 0.3 * torch.randn(features, features, generator=generator)
    offset = torch.randn(features, generator=generator)
    old_tokens = torch.randn(4000, features, generator=generator)
    new_tokens = old_tokens @ mix.T + offset  # the "new VAE": a mixed, shifted view of the same latent
    token_map = fit_token_map(old_tokens, new_tokens, ridge=0.0)
    new = inherit_projections(old, config, config, token_map)
    old_model, new_model = _model(config, old), _model(config, new)

    p = config.patch_size
    latent_t, side = 3, 2 * p
    img_ids = image_position_ids(latent_t, side, side, p)
    n = img_ids.shape[0]
    x_new = torch.randn(1, n, features, generator=generator)
    x_old = (x_new - offset) @ torch.linalg.inv(mix).T
    mask = torch.zeros(1, 1, latent_t, side, side)
    mask[:, :, 0] = 1.0  # i2v: the first latent frame is given
    ref_old = unpack(x_old, p, latent_t, side, side) * mask
    ref_new = unpack(x_new, p, latent_t, side, side) * mask
    cond_old, cond_new = (pack(torch.cat([mask, ref], 1), p) for ref in (ref_old, ref_new))
    txt = torch.randn(1, 5, config.context_in_dim, generator=generator)
    y_vec = torch.randn(1, config.vec_in_dim, generator=generator)
    t = torch.tensor([0.6])
    with torch.no_grad():
        v_old = mmdit_forward(old_model, x_old, cond_old, txt, y_vec, t, img_ids)
        v_new = mmdit_forward(new_model, x_new, cond_new, txt, y_vec, t, img_ids)
    # a velocity is a difference of latents: it maps by the linear part of the token map alone
    assert torch.allclose(v_new, v_old @ mix.T, atol=1e-4), (v_new - v_old @ mix.T).abs().max()
    assert not torch.allclose(v_new, v_old, atol=1e-2)  # the map did something


def test_command_inherits_the_demo_model_onto_a_4x_block_mean_vae(tmp_path, capsys):
    """The bundled MMDiT (8x VAE, patch 4) moved behind a 4x VAE with 3 latent channels and patch 8:
    the same 32x32 pixels per token, so the map is fitted on the tokens of a rendered clip."""
    text = (PRESET_DIR / "demo.toml").read_text()
    vae_file, out = tmp_path / "vae4x.safetensors", tmp_path / "mmdit4x.safetensors"
    replacements = {
        "in_channels = 128": "in_channels = 192", "patch_size = 4": "patch_size = 8",
        "latent_channels = 8": "latent_channels = 3",
        "block_out_channels = [16, 32, 64, 64]": "block_out_channels = [16, 32, 64]\nspatial_compression = 4",
        'vae = "models/demo/vae.safetensors"': f'vae = "{vae_file}"',
        'mmdit = "models/demo/mmdit.safetensors"': f'mmdit = "{out}"',
    }
    for old, new in replacements.items():
        assert old in text, old
        text = text.replace(old, new)
    target_preset = tmp_path / "demo4x.toml"
    target_preset.write_text(text)
    target = load_preset(str(target_preset))
    save_file(initial_vae(target.vae, "block_mean").model.state_dict(), vae_file)

    weights = str(PRESET_DIR.parent / "models/demo/mmdit.safetensors")
    assert main(["repatch-mmdit", "--weights", weights, "--preset", str(target_preset), "--out", str(out),
                 "--inherit-from", "demo", "--fit-clips", "1"]) == 0
    assert "token size 128 -> 192, inherited through a token map fitted on 144 tokens" in capsys.readouterr().out
    inherited = load_file(out)
    fresh = repatch_projections(load_file(weights), target.mmdit)
    assert inherited["img_in.weight"].shape == fresh["img_in.weight"].shape == (192, 192)
    assert not torch.allclose(inherited["img_in.weight"].float(), fresh["img_in.weight"].float(), atol=1e-3)
    load_components(target)  # the preset loads the written file

    assert main(["repatch-mmdit", "--weights", weights, "--preset", str(target_preset), "--out", str(out),
                 "--inherit-from", "tiny-random"]) == 2
    assert "reads 128-number tokens, but preset tiny-random has in_channels 64" in capsys.readouterr().err
