"""`python -m training eval-demo`: the demo model's held-out accuracies as one JSON object.

Videos of the (colour, shape, motion, background) combinations training never rendered, each
measured from its pixels (training/demo/evaluation.py); `--combos seen` measures combinations
training did render, with the held-out set's shapes, motions and backgrounds.
"""

from __future__ import annotations

import argparse
import json

COMBO_SET_NAMES = ("held-out", "seen")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="demo", help="model preset (default demo)")
    parser.add_argument("--seeds", type=int, default=2, help="videos per combination (default 2)")
    parser.add_argument("--first-seed", type=int, default=0,
                        help="seeds FIRST_SEED ... FIRST_SEED + SEEDS - 1: fresh seeds check a choice made on others")
    parser.add_argument("--num-steps", type=int, default=None, help="sampling steps (preset default)")
    parser.add_argument("--combos", choices=COMBO_SET_NAMES, default="held-out",
                        help="held-out (default): combinations training never rendered; seen: SEEN_CONTROLS")
    parser.add_argument("--summary", action="store_true", help="print only the accuracies, not every video")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--dtype", default="fp32", help="fp32, bf16 or fp16 (default fp32: the measured numbers are fp32)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default 0: torch's default)")
    parser.add_argument("--out", default=None, metavar="FILE", help="also write the JSON to this file")


def run(args: argparse.Namespace) -> int:
    from opensora.devices import check_device
    from opensora.errors import UserError

    if args.seeds < 1 or args.first_seed < 0:
        raise UserError(f"--seeds must be >= 1 (got {args.seeds}) and --first-seed >= 0 (got {args.first_seed})")
    device, dtype = check_device(args.device, args.dtype)
    if args.threads < 0:
        raise UserError(f"--threads is {args.threads}; allowed: 0 (torch's default) or more")

    import tempfile
    from pathlib import Path

    from opensora.io.atomic import atomic_write_text
    from opensora.pipeline import OpenSoraPipeline
    from training.demo.evaluation import COMBO_SETS, evaluate

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    pipe = OpenSoraPipeline.from_preset(args.preset, device=device, dtype=dtype)
    with tempfile.TemporaryDirectory() as tmp:
        result = evaluate(pipe, args.seeds, args.num_steps, Path(tmp), COMBO_SETS[args.combos], args.first_seed)
    if args.summary:
        result = {k: v for k, v in result.items() if k not in ("per_video", "i2v")}
    text = json.dumps(result)
    if args.out:
        atomic_write_text(Path(args.out), text + "\n")
    print(text)
    return 0
