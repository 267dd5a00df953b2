"""VAE temporal tiling: off by default (the official decode), close to it when on, and its decode
memory does not grow with the video's length."""

import numpy as np
import pytest
import torch

from opensora.errors import UserError
from opensora.memory.probe import run_probe


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return (10 * torch.log10(4 / ((a - b) ** 2).mean())).item()  # pixels in [-1, 1]: peak-to-peak 2


@pytest.fixture(scope="module")
def demo_vae():
    from opensora.pipeline import OpenSoraPipeline

    return OpenSoraPipeline.from_preset("demo").vae


def test_default_decode_is_untiled_in_time(tiny_pipeline, demo_vae):
    assert not tiny_pipeline.vae.temporal_tiling and not demo_vae.temporal_tiling


def test_tiled_decode_is_close_to_the_official_one(demo_vae):
    """A demo-world clip (49 frames: three overlapping chunks) through the demo VAE."""
    from training.demo.shapes_world import render_clip, sample_spec

    spec = sample_spec(np.random.default_rng(3), num_frames=49, aspect_ratio="1:1", frame_sizes={"1:1": (64, 64)})
    clip = torch.from_numpy(render_clip(spec)).float().permute(3, 0, 1, 2)[None] / 127.5 - 1
    with torch.no_grad():
        latent = demo_vae.encode(clip, sample=False)
        official = demo_vae.decode(latent).clamp(-1, 1)
        demo_vae.set_temporal_tiling(True)
        try:
            tiled = demo_vae.decode(latent).clamp(-1, 1)
        finally:
            demo_vae.set_temporal_tiling(False)
    assert tiled.shape == official.shape == clip.shape
    to_official, max_abs = psnr(tiled, official), (tiled - official).abs().max().item()
    print(f"tiled vs untiled: PSNR {to_official:.2f} dB, max abs {max_abs:.4f}; reconstruction PSNR "
          f"untiled {psnr(official, clip):.2f} dB, tiled {psnr(tiled, clip):.2f} dB")
    assert to_official >= 40
    assert psnr(tiled, clip) >= psnr(official, clip) - 0.5  # no worse a reconstruction
    assert max_abs > 0  # it did tile


def test_bad_tile_sizes_are_refused(demo_vae):
    with pytest.raises(UserError, match="tile_frames 30 and stride_frames 24 must be multiples of 4"):
        demo_vae.set_temporal_tiling(True, 30, 24)
    with pytest.raises(UserError, match="4 <= stride_frames <= tile_frames"):
        demo_vae.set_temporal_tiling(True, 16, 32)


@pytest.mark.slow
def test_decode_memory_does_not_grow_with_length():
    """Child processes (peak RSS only grows): memory a decode adds, demo VAE at 128x128."""
    tiled_33 = run_probe("vae-decode", "--frames", "33", "--temporal-tiling")
    tiled_129 = run_probe("vae-decode", "--frames", "129", "--temporal-tiling")
    untiled_129 = run_probe("vae-decode", "--frames", "129")
    print(f"decode adds: tiled 33 frames {tiled_33['added_mib']} MiB, 129 frames {tiled_129['added_mib']} MiB; "
          f"untiled 129 frames {untiled_129['added_mib']} MiB")
    assert tiled_129["frames_out"] == 129
    assert tiled_129["added_mib"] <= 1.5 * tiled_33["added_mib"]
    assert untiled_129["added_mib"] >= 2 * tiled_129["added_mib"]
