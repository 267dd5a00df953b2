"""Training speed and memory of the tiny-random preset on the CPU: prints one JSON object.

    python bench/train_step.py [--steps 20] [--warmup 5] [--mode lora|full] [--threads 1]

Runs the real trainer (`training.trainer.train`) on a freshly rendered shapes dataset with the
tiny buckets, logging every step; samples/s is the median over the steps after the warm-up
(data loading, VAE encode, forward, backward and optimizer step included), peak RSS is the
process's maximum resident set size (resource.getrusage).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # runnable from a checkout

import torch  # noqa: E402

from training.config import apply_overrides, load_train_config, validate  # noqa: E402
from training.metrics import read_jsonl  # noqa: E402
from training.demo.shapes_dataset import write_dataset  # noqa: E402
from training.trainer import train  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps in total (default 20)")
    parser.add_argument("--warmup", type=int, default=5, help="first steps left out of the median (default 5)")
    parser.add_argument("--mode", default="lora", choices=("lora", "full"), help="what is trained (default lora)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--clips", type=int, default=12, help="rendered 9-frame clips in the dataset (default 12)")
    args = parser.parse_args()
    if args.steps <= args.warmup:
        parser.error(f"--steps {args.steps} must be larger than --warmup {args.warmup}")

    with tempfile.TemporaryDirectory(prefix="train-bench-") as tmp:
        csv_path = write_dataset(Path(tmp) / "shapes", num_clips=args.clips, seed=0, num_images=0, num_frames=9)
        config = load_train_config("tiny")
        apply_overrides(config, {
            "data": str(csv_path), "output_dir": str(Path(tmp) / "run"), "mode": args.mode, "steps": args.steps,
            "runtime.threads": args.threads, "runtime.device": "cpu", "log.every": 1, "log.tensorboard": False,
            "checkpoint.every": args.steps + 1,  # only the final checkpoint, after the timed steps
        })
        if args.mode == "full":
            apply_overrides(config, {"optim.lr": 1e-3})
        started = time.perf_counter()
        result = train(validate(config))
        wall = time.perf_counter() - started
        metrics = read_jsonl(Path(tmp) / "run" / "metrics.jsonl")

    timed = [m for m in metrics if m["step"] > args.warmup]
    samples_per_s = statistics.median(m["samples_per_s"] for m in timed)
    peak_rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux
    print(json.dumps({
        "benchmark": "train_step",
        "samples_per_s": round(samples_per_s, 2),
        "steps_timed": len(timed),
        "peak_rss_mb": round(peak_rss_kb / 1024, 1),
        "loss_first": round(result.first_loss, 4),
        "loss_last": round(result.last_loss, 4),
        "eval_loss_start": round(result.eval_loss_start, 4),
        "eval_loss_end": round(result.eval_loss_end, 4),
        "wall_s": round(wall, 2),
        "config": {
            "preset": config.preset, "mode": config.mode, "steps": config.steps, "warmup_steps_excluded": args.warmup,
            "buckets": config.buckets, "batch": "2 clips of 9 frames at 32x32 / 32x64 / 64x32",
            "lora_rank": config.lora.rank if config.mode == "lora" else None, "lr": config.optim.lr,
            "threads": args.threads, "device": "cpu",
        },
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
