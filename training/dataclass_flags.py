"""Command-line flags generated from a config dataclass: one `--field-name` per field.

Each field's type comes from its annotation (int, float, str; bool becomes `--x / --no-x`), its
help from `field(metadata={"help": ...})`, and the default shown is the dataclass's own. Flags a
user does not give stay None and leave the dataclass default in place, so the config, not the
parser, is the one source of defaults. Values are checked by the config's `validate()`.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing

KINDS = {int: "N", float: "X", str: "TEXT"}


def add_dataclass_flags(parser: argparse.ArgumentParser, cls: type) -> None:
    hints = typing.get_type_hints(cls)
    defaults = cls()
    for f in dataclasses.fields(cls):
        kind, default = hints[f.name], getattr(defaults, f.name)
        flag = "--" + f.name.replace("_", "-")
        help_text = f.metadata.get("help", "")
        if kind is bool:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None,
                                help=f"{help_text} (default: {'on' if default else 'off'})")
        elif kind in KINDS:
            choices = f.metadata.get("choices")
            parser.add_argument(flag, dest=f.name, type=kind, default=None, choices=choices,
                                metavar="|".join(choices) if choices else f.metadata.get("metavar", KINDS[kind]),
                                help=f"{help_text} (default: {default!r})")
        else:
            raise TypeError(f"{cls.__name__}.{f.name}: no flag for type {kind}")


def dataclass_from_flags(cls: type, args: argparse.Namespace):
    """`cls` with every flag the user gave; the others keep their dataclass defaults."""
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if getattr(args, f.name, None) is not None}
    return cls(**given)
