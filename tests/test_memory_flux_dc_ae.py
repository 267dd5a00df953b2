"""The memory planner knows FLUX (text -> image -> video) and the Video DC-AE (high compression)."""

import json
import math
from dataclasses import replace

from conftest import FIXTURES
from opensora.memory.planner import PlanRequest, plan
from opensora.memory.sizes import component_sizes
from opensora.presets import load_preset

GIB = 2**30


def official_total(name: str) -> int:
    return sum(math.prod(e["shape"]) for e in json.loads((FIXTURES / name).read_text())["keys"])


def test_sizes_count_the_dc_ae_and_flux_as_the_official_files_hold_them():
    sizes = component_sizes(load_preset("high-compression"))
    assert sizes.vae_params == official_total("dc_ae_keys.json") == 459_462_147
    assert sizes.flux.params == official_total("flux_dev_keys.json") == 11_901_408_320
    assert sizes.vae_decoder_width == 128 and sizes.flux_vae_decoder_width == 128
    assert component_sizes(load_preset("opensora-v2-256px")).flux is None  # no [flux] part


def test_t2i2v_adds_flux_weights_to_every_gpu_phase_and_an_image_phase():
    preset = load_preset("opensora-v2-t2i2v-256px")
    sizes = component_sizes(preset)
    plain = PlanRequest(preset, 129, 192, 336, device="cuda", dtype="bf16")
    t2i2v = replace(plain, t2i2v_image=preset.image_size("768px", "16:9"))
    flux_bytes = 2 * (sizes.flux.params + sizes.flux_vae_params)
    for before, after in zip(plan(plain, sizes).rows, plan(t2i2v, sizes).rows):
        assert "image" in after.phases and "image" not in before.phases
        for phase in ("encode", "sample", "decode"):
            assert after.phases[phase] - before.phases[phase] == flux_bytes, (after.profile, phase)
        assert after.gpu_gib >= before.gpu_gib + flux_bytes / GIB - 1e-6


def test_high_compression_plans_with_the_dc_ae_tiles():
    preset = load_preset("high-compression")
    request = PlanRequest(preset, 129, 576, 1024, device="cuda", dtype="bf16")
    none = {row.profile: row for row in plan(request).rows}["none"]
    shorter = {row.profile: row for row in plan(replace(request, num_frames=65)).rows}["none"]
    # decode activations are those of one 32-frame, 256 px tile; only the decoded video grows with length
    video_bytes = 3 * 576 * 1024 * 4
    growth = none.phases["decode"] - shorter.phases["decode"]
    assert abs(growth - 2.5 * (129 - 65) * video_bytes) <= 1
