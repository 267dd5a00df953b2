"""`python -m training train-text-encoders`: word-level tokenizer + tiny T5/CLIP encoders for the demo.

Writes OUT/t5/ and OUT/clip/ (safetensors + tokenizer.json), loadable by
`opensora.models.text_encoders.TextConditioner.from_pretrained`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from opensora.errors import UserError
from opensora.presets import load_preset
from training.demo.text_encoder_config import TextTrainConfig

DEFAULTS = TextTrainConfig()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="folder that gets t5/ and clip/ (e.g. models/demo)")
    parser.add_argument("--preset", default="demo",
                        help="preset giving the widths (mmdit context_in_dim, vec_in_dim) and [text] max lengths (default demo)")
    parser.add_argument("--steps", type=int, default=DEFAULTS.steps, help=f"optimizer steps (default {DEFAULTS.steps})")
    parser.add_argument("--seed", type=int, default=DEFAULTS.seed, help=f"seeds captions, init and batches (default {DEFAULTS.seed})")
    parser.add_argument("--num-captions", type=int, default=DEFAULTS.num_captions,
                        help=f"training caption pool size (default {DEFAULTS.num_captions})")
    parser.add_argument("--work-dir", default=None, help="where summary.json goes (optional)")
    parser.add_argument("--threads", type=int, default=DEFAULTS.threads, help=f"torch CPU threads (default {DEFAULTS.threads})")


def run(args: argparse.Namespace) -> int:
    from training.demo.text_encoder_trainer import train_text_encoders

    preset = load_preset(args.preset)
    if preset.mmdit.context_in_dim != preset.mmdit.vec_in_dim:
        raise UserError(f"preset {preset.name}: [mmdit] context_in_dim {preset.mmdit.context_in_dim} and vec_in_dim "
                        f"{preset.mmdit.vec_in_dim} differ; the demo encoders have one width for both, so they must be equal")
    cfg = TextTrainConfig(steps=args.steps, seed=args.seed, num_captions=args.num_captions, threads=args.threads,
                          width=preset.mmdit.context_in_dim, text=preset.text,
                          warmup_steps=min(DEFAULTS.warmup_steps, max(args.steps // 10, 1)))
    summary = train_text_encoders(cfg, Path(args.out), Path(args.work_dir) if args.work_dir else None)
    print(json.dumps({k: summary[k] for k in ("seconds", "vocab_size", "train_accuracy", "held_out_accuracy")}, indent=1))
    return 0
