"""`python -m training demo-recipe --out DIR [--device cuda] [--scale smoke|full] [--dry-run]`.

Runs every step that makes the bundled demo model, in order, from a fresh clone: the rendered data,
the text encoders, the shape-code VAE, the MMDiT runs with their growth and averaging, the decoder
runs on the MMDiT's own latents, the shards and the held-out evaluation (training/demo/recipe.py;
how each step came about: training/demo/HISTORY.md). DIR/models/demo/ then holds the weights and
DIR/presets/demo.toml a preset that uses them. A step whose files exist is skipped, so the same
command continues a stopped recipe. `--scale smoke` runs every step at tiny sizes (seconds per
step on a CPU); `full` is the HISTORY's sizes, for a GPU session.
"""

from __future__ import annotations

import argparse
import time

from training.demo.recipe import SCALES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="folder for the data, runs, presets and models/demo/ of the recipe")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where every step runs (default cpu)")
    parser.add_argument("--scale", choices=SCALES, default="full",
                        help="full (default): the HISTORY's sizes, hours on one GPU; smoke: every step at tiny sizes")
    parser.add_argument("--dry-run", action="store_true", help="print the planned steps and their commands, run nothing")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from training.demo.recipe import Recipe

    recipe = Recipe(Path(args.out), args.scale, args.device)
    if args.dry_run:
        print(recipe.plan())
        return 0
    started = time.perf_counter()
    recipe.run()
    print(f"demo recipe ({args.scale}) finished in {time.perf_counter() - started:.1f} s: "
          f"{recipe.out / 'models' / 'demo'}, preset {recipe.out / 'presets' / 'demo.toml'}")
    return 0
