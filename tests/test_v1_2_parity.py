"""Parity with the official Open-Sora 1.2 code on the fixtures it produced (float32, CPU)."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import REPO
from opensora.models.stdit3 import STDiT3Config, build_stdit3
from opensora.models.vae_v1_2 import module_to_official_name
from opensora.parity import ATOL
from opensora.parity_v1_2 import is_v1_2_folder, load_tiny_vae, run_checks, run_parity_v1_2

FIXTURES_V1_2 = REPO / "tests" / "fixtures" / "opensora_v1_2"
RUNS = [run["name"] for run in json.loads((FIXTURES_V1_2 / "sampler_tiny.json").read_text())["runs"]]


@pytest.fixture
def one_thread():
    """Tiny tensors on a shared CPU: one thread is ~10x faster than two."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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


def test_sizes_come_from_the_fixture_json(tmp_path, one_thread):
    """A folder in the same format with other dims and frame counts (made here by this
    implementation, so only the harness is under test): nothing in the checks is hard-coded."""
    torch.manual_seed(0)
    config = dict(hidden_size=32, depth=1, num_heads=2, patch_size=[1, 2, 2], in_channels=4, caption_channels=16,
                  model_max_length=6, qk_norm=True, mlp_ratio=2.0, input_sq_size=512, pred_sigma=True)
    model = build_stdit3(STDiT3Config(**config)).eval()
    io = dict(x=torch.randn(2, 4, 3, 6, 3), timestep=torch.tensor([700.0, 30.0]), y=torch.randn(2, 1, 6, 16),
              mask=torch.tensor([[1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1]]), fps=torch.tensor([24.0, 24.0]),
              height=torch.tensor([48.0, 48.0]), width=torch.tensor([24.0, 24.0]),
              x_mask=torch.tensor([[False, True, True], [True, True, True]]))
    size = dict(fps=io["fps"], height=io["height"], width=io["width"])
    with torch.no_grad():
        io["out"] = model(io["x"], io["timestep"], io["y"], io["mask"], **size)
        io["out_xmask"] = model(io["x"], io["timestep"], io["y"], io["mask"], io["x_mask"], **size)
        io["out_ynull_xmask"] = model(io["x"], io["timestep"], model.null_caption(2), io["mask"], io["x_mask"], **size)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "stdit3_tiny_weights.safetensors"))
    save_file({k: v.contiguous() for k, v in io.items()}, str(tmp_path / "stdit3_tiny_io.safetensors"))
    (tmp_path / "stdit3_tiny.json").write_text(json.dumps({"config": config}))

    vae_meta = json.loads((FIXTURES_V1_2 / "vae_tiny.json").read_text())
    vae_meta["frames"] = [5, 18]
    seed = next(v for k, v in vae_meta["seeds"].items() if k.startswith("global RNG before each official encode"))
    vae = load_tiny_vae(FIXTURES_V1_2)
    tensors = {}
    with torch.no_grad():
        for index, frames in enumerate(vae_meta["frames"]):
            p = f"v{frames}."
            tensors[p + "video"] = torch.rand(1, 3, frames, 16, 24) * 2 - 1
            for prefix, generator in (("", torch.Generator().manual_seed(seed + index)), ("mode.", None)):
                sample = generator is not None
                spatial_generator = torch.Generator().manual_seed(seed + index)
                tensors[p + prefix + "x_z"] = vae.encode_spatial(tensors[p + "video"], sample, spatial_generator)
                tensors[p + prefix + "latent"] = latent = vae.encode(tensors[p + "video"], sample, generator)
                tensors[p + prefix + "x_z_rec"] = vae.decode_temporal(latent * vae.scale + vae.shift, frames)
                tensors[p + prefix + "decoded"] = vae.decode(latent, frames)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp_path / "vae_tiny_io.safetensors"))
    save_file({module_to_official_name(k): v.contiguous() for k, v in vae.state_dict().items()},
              str(tmp_path / "vae_tiny_weights.safetensors"))
    (tmp_path / "vae_tiny.json").write_text(json.dumps(vae_meta))

    errors = run_checks(tmp_path)
    assert set(errors) == {"stdit3", "vae_v1_2_encode", "vae_v1_2_decode"}
    assert all(error < 1e-5 for error in errors.values()), errors
