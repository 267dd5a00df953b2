"""Shared dispatch for `python -m opensora` and `python -m training`: one module per command,
each with `add_arguments(parser)` and `run(args) -> int`; UserError -> message + exit 2."""

import argparse
import sys
from types import ModuleType

from opensora.errors import UserError
from opensora.logs import configure_logging


def build_parser(prog: str, description: str, commands: dict[str, tuple[ModuleType, str]]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module, help_text) in commands.items():
        module.add_arguments(sub.add_parser(name, help=help_text, description=help_text))
    return parser


def run_command(parser: argparse.ArgumentParser, commands: dict, argv: list[str] | None) -> int:
    configure_logging()
    args = parser.parse_args(argv)
    try:
        return commands[args.command][0].run(args) or 0
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
