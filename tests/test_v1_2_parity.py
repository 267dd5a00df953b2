"""Parity with the official Open-Sora 1.2 code on the fixtures it produced (float32, CPU)."""

import json
import shutil

import pytest
from safetensors.torch import load_file, save_file

from conftest import REPO
from opensora.parity import ATOL
from opensora.parity_v1_2 import is_v1_2_folder, run_checks, run_parity_v1_2

FIXTURES_V1_2 = REPO / "tests" / "fixtures" / "opensora_v1_2"
RUNS = [run["name"] for run in json.loads((FIXTURES_V1_2 / "sampler_tiny.json").read_text())["runs"]]


@pytest.fixture(scope="module")
def parity():
    return run_parity_v1_2(FIXTURES_V1_2)


@pytest.mark.parametrize("check", ["stdit3", "vae_v1_2_encode", "vae_v1_2_decode", "sampler_v1_2_schedules"]
                         + [f"sampler_v1_2_{name}" for name in RUNS])
def test_within_official_tolerance(parity, check):
    errors, _ = parity
    assert errors[check] is not None
    assert errors[check] < ATOL, f"{check}: max abs error {errors[check]}"


def test_exact_checks_and_overall_verdict(parity):
    errors, ok = parity
    for name in ("stdit3_keys", "vae_v1_2_keys", "sampler_v1_2_prompts", "sampler_v1_2_mask_cases"):
        assert errors[name] == 0, name
    assert set(RUNS) == {"t2v", "i2v_head", "v_extend", "v_edit", "connect"}
    assert ok


def test_folder_detection():
    assert is_v1_2_folder(FIXTURES_V1_2)
    assert not is_v1_2_folder(REPO / "tests" / "fixtures" / "opensora_v2")


def test_perturbed_weights_fail_and_absent_families_are_skipped(tmp_path):
    folder = tmp_path / "fixture"
    folder.mkdir()
    for name in ("stdit3_tiny.json", "stdit3_tiny_io.safetensors", "stdit3_tiny_intermediates.safetensors",
                 "stdit3_keys.json"):
        shutil.copy(FIXTURES_V1_2 / name, folder / name)
    weights = load_file(str(FIXTURES_V1_2 / "stdit3_tiny_weights.safetensors"))
    weights["final_layer.linear.bias"] = weights["final_layer.linear.bias"] + 1e-2
    save_file(weights, str(folder / "stdit3_tiny_weights.safetensors"))

    errors = run_checks(folder)
    assert errors["stdit3"] > ATOL
    assert errors["stdit3_keys"] == 0
    assert not any(name.startswith(("vae_v1_2", "sampler_v1_2")) for name in errors)  # families absent: skipped
