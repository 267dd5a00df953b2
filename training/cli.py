"""`python -m training <command>`: one small module per command under training/commands/.

Adding a command: import its module below and add one line to COMMANDS.
"""

from __future__ import annotations

import argparse
import logging
import sys

from opensora.errors import UserError
from training.commands import finetune, render_shapes, train_text_encoders, train_vae

COMMANDS = {
    "render-shapes": (render_shapes, "render the procedural shapes-world dataset (mp4 + png + data.csv)"),
    "train-vae": (train_vae, "train a preset's VAE on rendered shapes-world clips (demo model; resumable)"),
    "train-text-encoders": (train_text_encoders, "fit a word-level tokenizer and train tiny T5 + CLIP text encoders on shapes-world captions (demo model)"),
    "finetune": (finetune, "LoRA or full fine-tune of a preset's MMDiT on a video CSV (flow matching, resumable)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module, help_text) in COMMANDS.items():
        module.add_arguments(sub.add_parser(name, help=help_text, description=help_text))
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    module = COMMANDS[args.command][0]
    try:
        return module.run(args) or 0
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
