"""`python -m training grow-mmdit --weights IN --preset NAME --out OUT`: add identity single blocks."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", required=True, help="trained MMDiT (official layout, e.g. a run's model.safetensors)")
    parser.add_argument("--preset", required=True, help="preset (name or TOML) whose [mmdit] has the deeper shape")
    parser.add_argument("--out", required=True, help="where the grown weights go (safetensors)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the new blocks' inner weights (default 0)")


def run(args: argparse.Namespace) -> int:
    from opensora.io.atomic import save_safetensors_atomic
    from opensora.presets import load_preset
    from training.demo.mmdit_growth import count_single_blocks, grow_single_blocks
    from training.demo.weight_shards import read_weights

    state, _ = read_weights(Path(args.weights), "MMDiT weights")
    target = load_preset(args.preset).mmdit
    grown = grow_single_blocks(state, target, args.seed)
    save_safetensors_atomic(grown, args.out)
    print(f"{args.weights}: {count_single_blocks(state)} -> {target.depth_single_blocks} single blocks, wrote {args.out}")
    return 0
