"""A CSV of jobs (the official `--csv` batch format) -> one GenerationRequest per row.

Columns: `text` (required), optional `ref` (';'-separated for i2v_loop; relative paths are read
from the CSV's folder), `cond_type`, `seed`, and for the job queue (`queue add`, the app's Queue
tab) `preset`: each queued job has its own model, while `generate` runs one preset and ignores the
column as it ignores any other. Other settings come from the caller (CLI flags, the app's form).
Errors name the file and the line.
"""

from __future__ import annotations

import csv
from pathlib import Path

from opensora.errors import UserError
from opensora.generation_settings import GenerationRequest


def read_csv_rows(path: Path, name: str | None = None) -> list[dict[str, str]]:
    shown = name or path  # how messages name the file (an upload: its own name, not the temp path)
    if path.is_dir():
        raise UserError(f"the CSV {path} is a folder; give a CSV file")
    if not path.is_file():
        raise UserError(f"CSV file {path} does not exist")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            columns = reader.fieldnames or []
    except UnicodeDecodeError as err:
        raise UserError(f"{shown} is not UTF-8 text (byte {err.start}): save it as UTF-8 CSV") from None
    except csv.Error as err:
        raise UserError(f"{shown} is not a readable CSV: {err}") from None
    if "text" not in columns:
        found = ", ".join(columns) if columns else "none (empty file)"
        raise UserError(f"{shown} needs a `text` column (optional: ref, cond_type, seed, preset); "
                        f"columns found: {found}")
    if not rows:
        raise UserError(f"{shown} has a header but no rows: add one prompt per line")
    return rows


def _csv_reference(value: str, csv_path: Path) -> str:
    """Relative reference paths in a CSV are relative to the CSV's folder."""
    parts = [p.strip() for p in value.split(";")]
    return ";".join(p if Path(p).is_absolute() or Path(p).exists() else str(csv_path.parent / p) for p in parts)


def requests_from_csv(path: str | Path, preset_column: bool = False, other_preset_keeps: tuple[str, ...] | None = None,
                      name: str | None = None, **common) -> list[tuple[str, GenerationRequest]]:
    """(where, request) per row; `common` holds the other GenerationRequest fields (a row's own
    `cond_type`, `ref` and `seed` win over `common`'s). preset_column: a row's `preset` wins over
    common's; `other_preset_keeps` then names the only `common` fields such a row keeps (None: all;
    the app's form values belong to the form's preset). `name`: the file's name in messages
    (default: its path)."""
    path = Path(path)
    jobs = []
    for line, row in enumerate(read_csv_rows(path, name), start=2):
        where = f"{name or path} line {line}: "
        text = (row.get("text") or "").strip()
        if not text:
            raise UserError(f"{where}the text is empty")
        seed = (row.get("seed") or "").strip()
        try:
            seed = int(seed) if seed else common.get("seed")
        except ValueError:
            raise UserError(f"{where}seed {row['seed']!r} is not an integer") from None
        ref = (row.get("ref") or "").strip()
        values = {**common, "seed": seed}
        row_preset = (row.get("preset") or "").strip() if preset_column else ""
        if row_preset and row_preset != common.get("preset"):
            if other_preset_keeps is not None:
                values = {k: v for k, v in values.items() if k in other_preset_keeps or k == "seed"}
            values["preset"] = row_preset
        if ref:
            values["reference"] = _csv_reference(ref, path)
        if (row.get("cond_type") or "").strip():
            values["cond_type"] = row["cond_type"].strip()
        jobs.append((where, GenerationRequest(prompt=text, **values)))
    return jobs
