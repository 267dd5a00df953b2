"""`python -m training train-vae`: train a preset's HunyuanVideo VAE on rendered shapes-world clips.

Writes the weights (official key layout, scale_factor in the safetensors metadata), stores
scale_factor = 1 / latent std in the preset TOML's [vae] table (unless --no-update-preset), and
leaves metrics.jsonl, status.json, train.log, checkpoints/ and summary.json (PSNR on full
33-frame clips) in --work-dir. Every other flag is a field of `VAETrainConfig`
(training/demo/vae_config.py).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from training.dataclass_flags import add_dataclass_flags, dataclass_from_flags
from training.demo.vae_config import VAETrainConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="demo", help="preset whose [vae] is trained: a name in presets/ or a TOML path (default demo)")
    parser.add_argument("--out", required=True, help="weights file to write (.safetensors)")
    parser.add_argument("--work-dir", required=True, help="run folder: metrics.jsonl, status.json, train.log, checkpoints/, summary.json")
    parser.add_argument("--resume", choices=("auto", "no"), default="no",
                        help="auto: continue from the newest complete checkpoint in --work-dir (default no)")
    parser.add_argument("--no-update-preset", action="store_true",
                        help="leave the preset TOML's scale_factor as it is (e.g. for a decoder-only fine-tune)")
    add_dataclass_flags(parser, VAETrainConfig)


def run(args: argparse.Namespace) -> int:
    from opensora.presets import load_preset
    from training.demo.vae_trainer import train_vae, write_scale_factor

    preset = load_preset(args.preset)
    cfg = dataclass_from_flags(VAETrainConfig, args).validate(preset.vae)
    summary = train_vae(preset.vae, cfg, Path(args.out), Path(args.work_dir), resume=args.resume == "auto")
    if not args.no_update_preset:
        write_scale_factor(preset.path, summary["scale_factor"])
    shown = ("scale_factor", "eval_train_combos", "eval_held_out_combos", "shape_code_read_right")
    print(json.dumps({k: summary[k] for k in shown if k in summary}, indent=1))
    return 0
