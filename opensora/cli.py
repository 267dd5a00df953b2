"""`python -m opensora <command>`: one small module per command under opensora/commands/."""

import argparse
import logging
import sys

from opensora.commands import check, generate, parity, refine
from opensora.errors import UserError

COMMANDS = {
    "generate": (generate, "generate videos from prompts (text-to-video, image/video-to-video)"),
    "check": (check, "list which official checkpoint files are present or missing"),
    "parity": (parity, "compare this implementation against an official fixture folder"),
    "refine": (refine, "refine a prompt with an OpenAI-compatible server or the offline refiner"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m opensora", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module, help_text) in COMMANDS.items():
        module.add_arguments(sub.add_parser(name, help=help_text, description=help_text))
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    module = COMMANDS[args.command][0]
    try:
        return module.run(args) or 0
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
