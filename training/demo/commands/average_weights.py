"""`python -m training average-weights --out OUT A B [C ...]`: the uniform average of weight files."""

from __future__ import annotations

import argparse
from pathlib import Path

DTYPE_NAMES = ("bf16", "fp16", "fp32")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("weights", nargs="+", help="safetensors files of one model (same keys and shapes)")
    parser.add_argument("--out", required=True, help="where the average goes (safetensors; the first file's metadata)")
    parser.add_argument("--dtype", choices=DTYPE_NAMES, default=None,
                        help="cast every file's float tensors to this first and store the mean in it (default: "
                             "the files' own dtypes, the mean in the first file's); the demo MMDiT ships bf16")


def run(args: argparse.Namespace) -> int:
    from opensora.devices import DTYPES
    from opensora.io.atomic import save_safetensors_atomic
    from training.demo.weight_averaging import average_state_dicts
    from training.demo.weight_shards import read_weights

    read = [read_weights(Path(path), "weights") for path in args.weights]
    states = [state for state, _ in read]
    if args.dtype is not None:
        dtype = DTYPES[args.dtype]
        states = [{k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()} for state in states]
    averaged = average_state_dicts(states, args.weights)
    save_safetensors_atomic(averaged, args.out, read[0][1] or None)
    print(f"averaged {len(states)} files ({len(averaged)} tensors), wrote {args.out}")
    return 0
