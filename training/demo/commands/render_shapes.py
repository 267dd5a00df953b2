"""`python -m training render-shapes --out DIR --num N --seed S`: write a shapes-world dataset."""

from __future__ import annotations

import argparse
import time

from training.demo.shapes_world import DEFAULT_FPS, DEFAULT_NUM_FRAMES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output folder (gets data.csv, videos/, images/)")
    parser.add_argument("--num", type=int, required=True, help="number of video clips")
    parser.add_argument("--seed", type=int, default=0, help="same seed, same dataset (default 0)")
    parser.add_argument(
        "--num-images", type=int, default=0,
        help="single-frame PNG samples besides the clips (default 0: --num N writes N samples)",
    )
    parser.add_argument(
        "--frames", type=int, default=DEFAULT_NUM_FRAMES, help=f"frames per clip (default {DEFAULT_NUM_FRAMES})"
    )
    parser.add_argument("--fps", type=float, default=DEFAULT_FPS, help=f"frame rate (default {DEFAULT_FPS:g})")
    parser.add_argument(
        "--held-out", action="store_true", help="render only the held-out combinations (an eval set)"
    )


def run(args: argparse.Namespace) -> int:
    from training.demo.shapes_dataset import write_dataset

    started = time.perf_counter()
    csv_path = write_dataset(
        args.out,
        num_clips=args.num,
        seed=args.seed,
        num_images=args.num_images,
        num_frames=args.frames,
        fps=args.fps,
        held_out=args.held_out,
    )
    print(f"wrote {csv_path} in {time.perf_counter() - started:.1f}s")
    return 0
