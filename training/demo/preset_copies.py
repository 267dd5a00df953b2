"""Copies of a preset TOML with some values replaced, its comments and layout kept.

The demo recipe trains against copies of presets/demo.toml that name its own files (each MMDiT run
starts from the previous run's weights through `files.mmdit`), and `train-vae` rewrites a preset's
`[vae] scale_factor`; both go through `set_toml_values`.
"""

from __future__ import annotations

import json
import re

from opensora.errors import UserError


def toml_literal(value) -> str:
    """A TOML value: strings quoted and escaped, numbers and booleans as TOML writes them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_literal(v) for v in value) + "]"
    raise TypeError(f"no TOML literal for {value!r}")


def set_toml_values(text: str, table: str, values: dict[str, object], where: str = "the preset") -> str:
    """`text` with `key = ...` of `[table]` set to each of `values` (every key must be there once);
    a comment after a value stays."""
    lines = text.splitlines(keepends=True)
    current, found = None, {key: 0 for key in values}
    for i, line in enumerate(lines):
        header = re.match(r"^\s*\[([^\]]+)\]\s*(#.*)?$", line)
        if header:
            current = header.group(1).strip()
            continue
        match = re.match(r"^(\s*([A-Za-z0-9_]+)\s*=\s*)(\"[^\"]*\"|\[[^\]]*\]|[^#\s]+)(.*)$", line.rstrip("\n"))
        if current == table and match and match.group(2) in values:
            key = match.group(2)
            lines[i] = f"{match.group(1)}{toml_literal(values[key])}{match.group(4)}" + ("\n" if line.endswith("\n") else "")
            found[key] += 1
    wrong = [key for key, count in found.items() if count != 1]
    if wrong:
        raise UserError(f"{where} has no single `{wrong[0]} = ...` line in its [{table}] table")
    return "".join(lines)
