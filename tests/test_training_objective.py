"""Flow-matching objective, training conditioning and the trainer's TOML settings (no model runs)."""

import dataclasses

import pytest
import torch

from opensora.errors import UserError
from opensora.models.hunyuan_vae import VAEConfig
from opensora.presets import SamplerDefaults, available_presets
from opensora.sampling.conditioning import COND_TYPES, prepare_condition
from opensora.sampling.schedule import official_timesteps, shift_alpha
from training.conditioning import condition_from_clean_latent, draw_cond_types, fitting_cond_type
from training.config import (
    ConditioningMix,
    TrainConfig,
    apply_overrides,
    bucket_config_path,
    config_from_dict,
    load_train_config,
    preset_bucket_table,
    validate,
)
from training.flow_matching import (
    flow_matching_loss,
    noisy_latent,
    sample_timesteps,
    shift_timesteps,
    timestep_shift,
    velocity_target,
)
from training.latent_cache import posterior_mean, sample_posterior


def test_training_shift_is_the_inference_shift():
    # The sampler's timesteps are the shifted linear grid: the same map puts training times there.
    tokens, frames = 16 * 28, 33
    alpha = timestep_shift(SamplerDefaults(), tokens, frames)
    assert alpha == shift_alpha(tokens, frames)
    grid = torch.linspace(1, 0, 11, dtype=torch.float64)[:-1]
    assert shift_timesteps(grid, alpha).tolist() == pytest.approx(official_timesteps(10, tokens, frames)[:-1], abs=1e-6)
    assert timestep_shift(SamplerDefaults(shift=False), tokens, frames) == 1.0
    assert timestep_shift(SamplerDefaults(flow_shift=3.0), tokens, frames) == 3.0


def test_logit_normal_timesteps_are_shifted_towards_noise():
    plain = sample_timesteps(20000, 1.0, torch.Generator().manual_seed(0))
    shifted = sample_timesteps(20000, 4.0, torch.Generator().manual_seed(0))
    assert 0 < plain.min() and plain.max() < 1 and abs(plain.median().item() - 0.5) < 0.02
    assert shifted.median().item() == pytest.approx(0.8, abs=0.02)  # 4 * 0.5 / (1 + 3 * 0.5)
    again = sample_timesteps(20000, 4.0, torch.Generator().manual_seed(0))
    assert torch.equal(shifted, again)


def test_noising_and_velocity_target():
    x0, noise = torch.randn(2, 4, 3, 2, 2), torch.randn(2, 4, 3, 2, 2)
    assert torch.equal(noisy_latent(x0, noise, torch.zeros(2)), x0)
    assert torch.equal(noisy_latent(x0, noise, torch.ones(2)), noise)
    t = torch.tensor([0.3, 0.7])
    derivative = (noisy_latent(x0, noise, t + 1e-3) - noisy_latent(x0, noise, t - 1e-3)) / 2e-3
    assert torch.allclose(derivative, velocity_target(x0, noise), atol=1e-3)  # v = d x_t / dt


def test_clean_latent_is_a_posterior_sample_or_its_mean():
    vae = VAEConfig(scale_factor=0.5, shift_factor=0.2)
    mean = torch.tensor([1.0, -2.0, 3.0]).repeat(20000, 1)
    logvar = torch.log(torch.tensor([0.01, 1.0, 4.0])).repeat(20000, 1)
    assert torch.equal(posterior_mean(mean[:1], vae), torch.tensor([[0.4, -1.1, 1.4]]))
    drawn = sample_posterior(mean, logvar, vae, torch.Generator().manual_seed(0))
    assert torch.allclose(drawn.mean(0), posterior_mean(mean[:1], vae)[0], atol=0.03)
    assert torch.allclose(drawn.std(0), torch.tensor([0.05, 0.5, 1.0]), rtol=0.03)


def test_posterior_sample_setting_loads_and_is_checked():
    assert TrainConfig().loss.posterior_sample is True
    assert config_from_dict({"loss": {"posterior_sample": False}}, "train.toml").loss.posterior_sample is False
    with pytest.raises(UserError, match=r"posterior_sample is 'no'; must be true or false"):
        config_from_dict({"loss": {"posterior_sample": "no"}}, "train.toml")


def test_loss_can_leave_tokens_out():
    pred, target = torch.zeros(1, 4, 2), torch.tensor([[[1.0, 1.0], [2.0, 2.0], [0.0, 0.0], [0.0, 0.0]]])
    assert flow_matching_loss(pred, target).item() == pytest.approx((1 + 4) / 4)
    keep = torch.tensor([[0.0, 1.0, 1.0, 1.0]])
    assert flow_matching_loss(pred, target, keep).item() == pytest.approx(4 / 3)


def test_removed_outline_weight_is_an_unknown_key():
    # `[loss] outline_weight` (run 21 of the demo model, training/demo/HISTORY.md) did not help and is gone.
    with pytest.raises(UserError, match=r"unknown keys \['outline_weight'\]"):
        config_from_dict({"loss": {"outline_weight": 10.0}}, "t.toml")


def test_cond_types_follow_the_mix_and_the_seed():
    weights = {"t2v": 0.5, "i2v_head": 0.3, "i2v_tail": 0.2, "v2v_head": 0.0}
    drawn = draw_cond_types(weights, 4000, torch.Generator().manual_seed(1))
    assert "v2v_head" not in drawn
    assert drawn.count("t2v") / 4000 == pytest.approx(0.5, abs=0.03)
    assert drawn.count("i2v_tail") / 4000 == pytest.approx(0.2, abs=0.03)
    assert drawn[:50] == draw_cond_types(weights, 4000, torch.Generator().manual_seed(1))[:50]


def test_cond_types_that_do_not_fit_fall_back_to_t2v():
    assert fitting_cond_type("i2v_head", 1) == "t2v"
    assert fitting_cond_type("i2v_loop", 3) == "i2v_loop"
    assert fitting_cond_type("v2v_head", 3) == "t2v"  # needs 9 latent frames
    assert fitting_cond_type("v2v_tail", 9) == "v2v_tail"


def test_condition_comes_from_the_clean_latent_like_inference():
    x0 = torch.randn(4, 16, 9, 2, 4)
    types = ["t2v", "i2v_head", "i2v_loop", "v2v_tail"]
    masks, refs = condition_from_clean_latent(x0, types)
    assert masks[0].sum() == 0 and refs[0].abs().sum() == 0
    assert masks[1, 0, :, 0, 0].tolist() == [1] + [0] * 8 and torch.equal(refs[1, :, 0], x0[1, :, 0])
    assert masks[2, 0, :, 0, 0].tolist() == [1] + [0] * 7 + [1] and torch.equal(refs[2, :, -1], x0[2, :, -1])
    assert masks[3].all() and torch.equal(refs[3], x0[3])  # v2v: 9 latent frames = the whole clip here
    for i, cond_type in enumerate(types):  # exactly the sampler's layout with x0 as the reference
        mask, ref = prepare_condition((1, *x0[i].shape), cond_type, [[x0[i]]])
        assert torch.equal(masks[i : i + 1], mask) and torch.equal(refs[i : i + 1], ref)


def test_conditioning_mix_names_the_sampler_cond_types():
    assert tuple(ConditioningMix().weights()) == COND_TYPES


@pytest.mark.parametrize("name", ["default", "tiny", "demo", "demo-lora"])
def test_shipped_training_configs_load(name):
    config = load_train_config(name)
    # No table named (train-default.toml): the preset's own.
    assert bucket_config_path(config.buckets or preset_bucket_table("tiny-random", "tiny")).is_file()
    validate(apply_overrides(config, {"preset": "tiny-random", "data": "x.csv", "output_dir": "out"}))


def test_training_configs_are_not_model_presets():
    assert not [name for name in available_presets() if name.startswith("train-")]


@pytest.mark.parametrize(
    "data, message",
    [
        ({"optim": {"lrr": 1}}, r"unknown keys \['lrr'\]"),
        ({"optim": {"lr": "fast"}}, r"lr is 'fast'; must be a finite number"),
        ({"steps": 1.5}, r"steps is 1.5; must be an integer"),
        ({"lora": {"target_modules": "to_q"}}, r"target_modules is 'to_q'; must be a list"),
        ({"checkpoint": {"async_save": 1}}, r"async_save is 1; must be true or false"),
        ({"colour": "red"}, r"unknown keys \['colour'\]"),
    ],
)
def test_bad_toml_values_are_named(data, message):
    with pytest.raises(UserError, match=message):
        config_from_dict(data, "train.toml")


@pytest.mark.parametrize(
    "override, message",
    [
        ({"optim.lr": 0.0}, r"optim.lr is 0.0; allowed range \(0, 1\]"),
        ({"steps": 0}, r"steps is 0; allowed range \[1, 1e\+07\]"),
        ({"loss.text_dropout": 1.5}, r"loss.text_dropout is 1.5; allowed range \[0, 1\]"),
        ({"lora.rank": 0}, r"lora.rank is 0; allowed range \[1, 1024\]"),
        ({"ema.decay": 0.2}, r"ema.decay \(0 = off\) is 0.2; allowed range \[0.5, 1\)"),
        ({"mode": "half"}, r"mode is 'half'; allowed: lora, full"),
        ({"runtime.mixed_precision": "fp8"}, r"mixed_precision is 'fp8'; allowed: no, bf16, fp16"),
        ({"conditioning.t2v": 0.0, "conditioning.i2v_head": 0.0, "conditioning.i2v_tail": 0.0,
          "conditioning.i2v_loop": 0.0, "conditioning.v2v_head": 0.0, "conditioning.v2v_tail": 0.0}, r"sum to 0"),
        ({"data": ""}, r"--data is required"),
    ],
)
def test_out_of_range_values_name_value_and_range(override, message):
    config = apply_overrides(TrainConfig(), {"preset": "tiny-random", "data": "x.csv", "output_dir": "out"})
    with pytest.raises(UserError, match=message):
        validate(apply_overrides(config, override))


def test_config_round_trips_through_its_dict():
    config = load_train_config("tiny")
    again = config_from_dict({k: v for k, v in config.to_dict().items()}, "dict")
    assert dataclasses.asdict(again) == dataclasses.asdict(config)
