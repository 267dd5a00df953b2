"""`python -m opensora calibrate-cache --preset P`: MagCache's calibration run for a preset.

MagCache skips a step while the calibrated ratios of residual magnitudes say the skipped output
stays close to the last computed one. The ratios depend on the weights and the sampler, so this
runs diffusers' MagCache in calibration mode (nothing skipped) for a few prompts and seeds at the
preset's steps, averages the ratios step by step and writes them as data beside the preset:
`presets/cache/P-magcache.toml`, which `--cache magcache` reads.
"""

from __future__ import annotations

import argparse
import sys

from opensora.errors import UserError
from opensora.presets import DEFAULT_CKPT_DIR

MAX_RUNS = 64


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", required=True, help="preset name or TOML path (the file goes to cache/ beside it)")
    parser.add_argument("--prompt", action="append", default=[],
                        help="a calibration prompt; repeat for several (default: the preset's example prompt)")
    parser.add_argument("--seeds", type=int, default=4, help="runs per prompt, seeds 0..N-1 (default 4)")
    parser.add_argument("--num-steps", type=int, default=None, help="sampling steps (default: the preset's; "
                        "other step counts use the ratios resampled)")
    parser.add_argument("--ckpt-dir", default=DEFAULT_CKPT_DIR, help="folder with the official checkpoints")
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available)")
    parser.add_argument("--dtype", default=None, help="fp32, bf16 or fp16 (default: bf16 on GPU, fp32 on CPU)")


def run(args: argparse.Namespace) -> int:
    from opensora.generation_settings import RANGES, check_prompt, check_range
    from opensora.presets import FAMILY_V2, load_preset

    preset = load_preset(args.preset)
    if preset.family != FAMILY_V2:
        raise UserError(f"calibrate-cache is for Open-Sora 2.0 presets; {preset.name} is {preset.family_name}")
    prompts = [check_prompt(p) for p in args.prompt] or [preset.prompt.example]
    num_steps = check_range("num_steps", args.num_steps or preset.sampler.num_steps, 2, RANGES["num_steps"][1])
    if not 1 <= args.seeds or len(prompts) * args.seeds > MAX_RUNS:
        raise UserError(f"--seeds {args.seeds} is out of range: at least 1, at most {MAX_RUNS} runs in all "
                        f"({len(prompts)} prompts)")
    seeds = list(range(args.seeds))
    ratios = measure(preset, args, prompts, seeds, num_steps)
    from opensora.sampling.cache_spec import write_mag_ratios

    path = write_mag_ratios(preset.name, preset.path.parent, ratios, num_steps, prompts, seeds)
    print(f"{len(prompts) * len(seeds)} runs of {num_steps} steps; ratios from {min(ratios):.3f} to "
          f"{max(ratios):.3f}", file=sys.stderr)
    print(path)
    return 0


def measure(preset, args, prompts: list[str], seeds: list[int], num_steps: int) -> list[float]:
    """The per-step ratios, averaged over every (prompt, seed) run."""
    from opensora.devices import check_device
    from opensora.pipeline import OpenSoraPipeline
    from opensora.sampling.step_cache import magcache_calibration

    device, dtype = check_device(args.device, args.dtype)
    pipe = OpenSoraPipeline.from_preset(preset, args.ckpt_dir, device, dtype)
    with magcache_calibration(pipe.transformer, num_steps) as runs:
        for prompt in prompts:
            for seed in seeds:
                print(f"calibrating: seed {seed}, {prompt[:60]}", file=sys.stderr)
                pipe(prompt, seed=seed, num_steps=num_steps)
    if len(runs) != len(prompts) * len(seeds):
        raise RuntimeError(f"MagCache reported {len(runs)} calibrations for {len(prompts) * len(seeds)} runs")
    return [sum(step) / len(step) for step in zip(*runs)]
