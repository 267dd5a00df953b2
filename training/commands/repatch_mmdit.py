"""`python -m training repatch-mmdit --weights IN --preset NAME --out OUT`: fresh token projections."""

from __future__ import annotations

import argparse

from opensora.io.outputs import save_safetensors_atomic
from opensora.presets import load_preset
from training.commands.mmdit_weights_file import read_mmdit_weights
from training.mmdit_repatch import TOKEN_PROJECTIONS, repatch_projections


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", required=True, help="trained MMDiT (official layout, e.g. a run's model.safetensors)")
    parser.add_argument("--preset", required=True, help="preset (name or TOML) whose [mmdit] has the new token size")
    parser.add_argument("--out", required=True, help="where the new weights go (safetensors)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the new projections (default 0)")


def run(args: argparse.Namespace) -> int:
    state = read_mmdit_weights(args.weights)
    target = load_preset(args.preset).mmdit
    new = repatch_projections(state, target, args.seed)
    renewed = sorted(key for key in new if key.startswith(TOKEN_PROJECTIONS) and new[key].shape != state[key].shape)
    save_safetensors_atomic(new, args.out)
    print(f"{args.weights}: token size {state['img_in.weight'].shape[1]} -> {target.in_channels}, "
          f"new {', '.join(renewed)}; wrote {args.out}")
    return 0
