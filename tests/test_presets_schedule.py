"""Buckets, frame rules and the shifted schedule against the official numbers."""

import json

import pytest

from conftest import FIXTURES
from opensora.errors import UserError
from opensora.generation_settings import check_num_frames
from opensora.presets import available_presets, load_preset
from opensora.sampling.schedule import official_timesteps, shift_alpha


@pytest.mark.parametrize("resolution", ["256px", "768px"])
def test_official_buckets(resolution):
    expected = json.loads((FIXTURES / "aspect_buckets.json").read_text())["buckets"][resolution]["inference"]
    preset = load_preset(f"opensora-v2-{resolution}")
    for name in ("16:9", "9:16", "1:1", "2.39:1"):
        assert preset.image_size(resolution, name) == tuple(expected[name])
    assert {k: list(v) for k, v in preset.buckets[resolution].items()} == expected
    other = "768px" if resolution == "256px" else "256px"
    assert other in preset.buckets  # same model, either resolution


def test_presets_load():
    assert {"opensora-v2-256px", "opensora-v2-768px", "tiny-random"} <= set(available_presets())


def test_unknown_aspect_ratio_names_allowed_ones():
    with pytest.raises(UserError, match=r"'7:3'.*allowed: .*16:9"):
        load_preset("opensora-v2-256px").image_size("256px", "7:3")


@pytest.mark.parametrize("bad", [0, 2, 10, 32, 133, -3])
def test_frame_counts_must_be_4k_plus_1(bad):
    with pytest.raises(UserError, match=rf"num_frames {bad} .*4k\+1.*129"):
        check_num_frames(bad)


@pytest.mark.parametrize("good", [1, 5, 9, 33, 129])
def test_frame_counts_accepted(good):
    assert check_num_frames(good) == good


def test_schedule_examples_from_official_code():
    examples = json.loads((FIXTURES / "self_checks.json").read_text())["schedule_examples_50_steps"]
    example = examples["256px_16:9_129f_hunyuan"]
    alpha = shift_alpha(example["image_seq_len_arg"], example["latent_T"])
    assert alpha == pytest.approx(example["shift_alpha"], rel=1e-12)
    steps = official_timesteps(50, example["image_seq_len_arg"], example["latent_T"])
    assert steps[: len(example["first_timesteps"])] == example["first_timesteps"]
    assert len(steps) == 51 and steps[-1] == 0.0


def test_sampler_fixture_schedules_exact():
    runs = json.loads((FIXTURES / "sampler_tiny.json").read_text())["runs"]
    for run in runs.values():
        num_steps, tokens, frames = run["schedule_call"]["args"]
        assert official_timesteps(num_steps, tokens, frames) == run["timesteps"]
