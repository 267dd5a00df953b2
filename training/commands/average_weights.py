"""`python -m training average-weights --out OUT A B [C ...]`: the uniform average of weight files."""

from __future__ import annotations

import argparse

from safetensors import safe_open

from opensora.io.outputs import save_safetensors_atomic
from training.commands.mmdit_weights_file import read_mmdit_weights
from training.weight_averaging import average_state_dicts


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("weights", nargs="+", help="safetensors files of one model (same keys and shapes)")
    parser.add_argument("--out", required=True, help="where the average goes (safetensors; the first file's metadata)")


def run(args: argparse.Namespace) -> int:
    states = [read_mmdit_weights(path) for path in args.weights]
    averaged = average_state_dicts(states, args.weights)
    with safe_open(args.weights[0], "pt") as f:
        metadata = f.metadata()
    save_safetensors_atomic(averaged, args.out, metadata)
    print(f"averaged {len(states)} files ({len(averaged)} tensors), wrote {args.out}")
    return 0
