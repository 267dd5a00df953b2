"""Parity with the official Open-Sora 2.0 code on the fixtures it produced (float32, CPU)."""

import json
import shutil

import pytest
from safetensors.torch import load_file, save_file

from conftest import FIXTURES, run_cli
from opensora.parity import ATOL, run_parity


@pytest.fixture(scope="module")
def parity():
    return run_parity(FIXTURES)


@pytest.mark.parametrize(
    "check",
    ["mmdit", "mmdit_interleaved", "vae_encode", "vae_decode", "vae_tiled_encode", "vae_tiled_decode",
     "cond_layouts", "sampler_t2v", "sampler_i2v_head", "sampler_i2v_tail", "sampler_i2v_loop", "sampler_v2v_head",
     "dc_ae_encode", "dc_ae_decode", "dc_ae_scaled_encode", "dc_ae_scaled_decode", "dc_ae_temporal_tiled_encode",
     "dc_ae_temporal_tiled_decode", "dc_ae_spatial_tiled_encode", "dc_ae_spatial_tiled_decode"],
)
def test_within_official_tolerance(parity, check):
    errors, _ = parity
    assert errors[check] is not None
    assert errors[check] < ATOL, f"{check}: max abs error {errors[check]}"


def test_key_lists_exact(parity):
    errors, ok = parity
    assert errors["mmdit_v2_keys"] == 0 and errors["mmdit_v2_dcae_keys"] == 0 and errors["hunyuan_vae_keys"] == 0
    assert errors["dc_ae_keys"] == 0 and errors["flux_dev_keys"] == 0  # Video DC-AE, FLUX.1-dev
    assert None not in errors.values()  # every check of the public fixture runs
    assert ok


def test_cli_prints_one_json_line_and_fails_on_a_perturbed_fixture(tmp_path):
    folder = tmp_path / "fixture"
    shutil.copytree(FIXTURES, folder)
    weights = load_file(str(folder / "mmdit_tiny_weights.safetensors"))
    weights["final_layer.linear.bias"] = weights["final_layer.linear.bias"] + 1e-2
    save_file(weights, str(folder / "mmdit_tiny_weights.safetensors"))
    for name in ("hunyuan_vae_tiny_io.safetensors", "sampler_tiny_io.safetensors", "dc_ae_tiny_io.safetensors"):
        (folder / name).unlink()  # keep the run short: the MMDiT family is enough to fail

    proc = run_cli("parity", str(folder))
    assert proc.returncode == 1, proc.stderr
    errors = json.loads(proc.stdout.strip().splitlines()[-1])
    assert errors["mmdit"] > ATOL
    assert errors["cond_layouts"] == 0.0
    assert "sampler_t2v" not in errors  # family absent from the folder: skipped
