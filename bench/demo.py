"""Generation time of the bundled demo model's default video (33 frames, 128x128, preset steps)
on this machine, model already loaded. Prints one JSON object.

    python bench/demo.py [--runs 5] [--device cuda --dtype bf16]
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from opensora.pipeline import OpenSoraPipeline  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), default="fp32")
    args = parser.parse_args()
    started = time.perf_counter()
    pipe = OpenSoraPipeline.from_preset(args.preset, device=args.device, dtype=args.dtype)
    load_seconds = time.perf_counter() - started
    prompt = "a green triangle moving right on a black background"
    pipe(prompt, seed=0, num_steps=2)  # warm-up
    times, step_times = [], []
    for seed in range(args.runs):
        stamps = [time.perf_counter()]
        pipe(prompt, seed=seed, callback=lambda *_: stamps.append(time.perf_counter()))
        times.append(time.perf_counter() - stamps[0])
        step_times += [b - a for a, b in zip(stamps, stamps[1:])][1:]
    sampler = pipe.preset.sampler
    print(json.dumps({
        "preset": args.preset,
        "num_frames": sampler.num_frames,
        "size": pipe.preset.image_size(sampler.resolution, sampler.aspect_ratio),
        "num_steps": sampler.num_steps,
        "threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
        "dtype": args.dtype,
        "load_seconds": load_seconds,
        "seconds_per_video_median": statistics.median(times),
        "seconds_per_video_all": times,
        "seconds_per_step_median": statistics.median(step_times),
    }))


if __name__ == "__main__":
    main()
