"""Wall time per denoising step, with the machine's matmul FLOP/s measured in the same run.

    python bench/step.py [--repeats 3] [--skip-slice] [--device cuda --dtype bf16]

Prints one JSON object:
- tiny: median seconds per step of the tiny-random preset (full pipeline step: 3-batch CFG).
- slice: a 1 double + 1 single block slice of the full-width (3072) MMDiT at the 256px 16:9
  33-frame token count (9 x 12 x 21 image tokens + 512 text tokens), batch 3 as in sampling;
  median seconds per step, FLOPs per step (torch's FlopCounterMode) and achieved FLOP/s.
- matmul_peak_flops: median FLOP/s of a 4096^3 matmul in --dtype, and the ratio achieved/peak.
"""

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from opensora.models.mmdit import build_mmdit, mmdit_forward  # noqa: E402
from opensora.pipeline import OpenSoraPipeline, parse_dtype  # noqa: E402
from opensora.presets import load_preset  # noqa: E402
from opensora.sampling.packing import image_position_ids  # noqa: E402


def timed(fn, device: str) -> float:
    """Wall seconds of fn(), waiting for the GPU's queue on both sides."""
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def matmul_flops(device: str, dtype: torch.dtype, size: int = 4096, repeats: int = 5) -> float:
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    a @ b  # warm-up
    times = [timed(lambda: a @ b, device) for _ in range(repeats)]
    return 2 * size**3 / statistics.median(times)


def tiny_step_seconds(device: str, dtype: torch.dtype, steps: int = 20) -> float:
    pipe = OpenSoraPipeline.from_preset("tiny-random", device=device, dtype=dtype)
    pipe("warm-up", num_frames=9, num_steps=2, seed=0)
    stamps = [time.perf_counter()]
    pipe("a cat", num_frames=9, num_steps=steps, seed=0, callback=lambda *_: stamps.append(time.perf_counter()))
    return statistics.median(b - a for a, b in zip(stamps[1:], stamps[2:]))


def slice_step(repeats: int, device: str, dtype: torch.dtype) -> dict:
    preset = load_preset("opensora-v2-256px")
    config = replace(preset.mmdit, depth=1, depth_single_blocks=1)
    torch.manual_seed(0)
    model = build_mmdit(config).eval().to(device, dtype)
    height, width = preset.image_size("256px", "16:9")
    latent_t, latent_h, latent_w = preset.vae.latent_frames(33), height // 8, width // 8
    tokens = latent_t * (latent_h // 2) * (latent_w // 2)
    batch = 3  # cond, uncond, uncond without image: one model call per sampling step

    def inputs(*shape):
        return torch.randn(*shape).to(device, dtype)

    img = inputs(batch, tokens, config.in_channels)
    cond = inputs(batch, tokens, config.cond_channels)
    txt = inputs(batch, preset.text.t5_max_length, config.context_in_dim)
    y_vec = inputs(batch, config.vec_in_dim)
    t = torch.full((batch,), 0.5).to(device, dtype)
    ids = image_position_ids(latent_t, latent_h, latent_w, 2).to(device)

    def step():
        with torch.no_grad():
            mmdit_forward(model, img, cond, txt, y_vec, t, ids)

    with FlopCounterMode(display=False) as counter:
        step()  # also the warm-up
    times = [timed(step, device) for _ in range(repeats)]
    seconds = statistics.median(times)
    flops = counter.get_total_flops()
    return {
        "image_tokens": tokens,
        "text_tokens": preset.text.t5_max_length,
        "batch": batch,
        "params": sum(p.numel() for p in model.parameters()),
        "seconds_per_step_median": seconds,
        "seconds_all": times,
        "flops_per_step": flops,
        "achieved_flops": flops / seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of the slice step")
    parser.add_argument("--skip-slice", action="store_true", help="only the tiny preset and matmul peak")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), default="fp32")
    args = parser.parse_args()
    device, dtype = args.device, parse_dtype(args.dtype)
    torch.backends.cuda.matmul.allow_tf32 = False
    result = {"threads": torch.get_num_threads(), "cpus": os.cpu_count(), "torch": torch.__version__,
              "device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "dtype": args.dtype}
    result["matmul_peak_flops_before"] = matmul_flops(device, dtype)
    result["tiny_seconds_per_step_median"] = tiny_step_seconds(device, dtype)
    if not args.skip_slice:
        result["slice"] = slice_step(args.repeats, device, dtype)
    result["matmul_peak_flops_after"] = matmul_flops(device, dtype)
    peak = max(result["matmul_peak_flops_before"], result["matmul_peak_flops_after"])
    result["matmul_peak_flops"] = peak
    if "slice" in result:
        result["slice"]["achieved_over_peak"] = result["slice"]["achieved_flops"] / peak
    print(json.dumps(result))


if __name__ == "__main__":
    main()
