"""The curation CSV: reading, column order, number formatting, and the input of the first stage.

Every stage reads and writes this one format: the trainer's columns first (``path,text`` and the
optional ``num_frames,height,width,fps,aspect_ratio,motion_score`` of ``training/dataset_csv.py``),
then whatever the stages added, in the order they added it. Paths are written absolute, so a CSV
can move between work folders; relative input paths resolve against the input CSV's folder.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from opensora.errors import UserError, listing

Row = dict[str, str]

# Kept in sync by hand with opensora/io/video.py's VIDEO_EXTENSIONS: importing that module pulls
# in torch, which the curation workers do not otherwise need.
VIDEO_EXTENSIONS = (".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi")


def trainer_columns() -> tuple[str, ...]:
    # Imported here, not at the top: dataset_csv pulls in torch, which the worker processes
    # (they import this module but never order columns) would otherwise load for nothing.
    from training.dataset_csv import OPTIONAL_COLUMNS, REQUIRED_COLUMNS

    return REQUIRED_COLUMNS + OPTIONAL_COLUMNS


def order_columns(columns: Iterable[str]) -> list[str]:
    """Trainer columns first (in the trainer's order), the rest in first-seen order, no repeats."""
    seen = list(dict.fromkeys(c for c in columns if c))
    first = trainer_columns()
    return [c for c in first if c in seen] + [c for c in seen if c not in first]


def read_csv(path: str | Path) -> tuple[list[str], list[Row]]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"input CSV not found: {path}")
    # utf-8-sig: spreadsheet exports often start with a byte-order mark.
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        if "path" not in columns:
            raise UserError(f"CSV {path} has columns {columns or '(none)'}; it needs at least a 'path' column")
        rows = [{(k or "").strip(): v if isinstance(v, str) else "" for k, v in row.items()} for row in reader]
    return columns, rows


def write_csv(path: str | Path, columns: Sequence[str], rows: Iterable[Row]) -> None:
    """Write the whole file beside its target and move it into place, so readers never see half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="raise")
            writer.writeheader()
            writer.writerows({c: row.get(c, "") for c in columns} for row in rows)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def format_number(value: float, digits: int = 4) -> str:
    """Fixed decimals, so the same value always prints the same way (local vs Ray runs compare)."""
    text = f"{value:.{digits}f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def parse_int(row: Row, column: str) -> int | None:
    text = (row.get(column) or "").strip()
    if not text:
        return None
    try:
        return int(float(text))
    except ValueError:
        return None


def frame_range(row: Row) -> tuple[int, int | None]:
    """[start, end) frames of ``path`` that the row stands for (end None: to the end of the file).

    Uncut scenes (``scenes --no-cut``) are ranges inside their source; cut clips are whole files."""
    start = parse_int(row, "start_frame") or 0
    return max(start, 0), parse_int(row, "end_frame")


def row_key(row: Row) -> str:
    """What identifies an input row across runs (resume checks the done rows still match)."""
    start, end = frame_range(row)
    return json.dumps([row.get("path", ""), start, end])


def discover_inputs(source: str | Path) -> tuple[list[str], list[Row]]:
    """The first stage's input: every video file under a folder (sorted), or the rows of a CSV."""
    source = Path(source).expanduser()
    if source.is_dir():
        # Hidden names are skipped: they include the half-written clips of an interrupted cut.
        files = sorted(p for p in source.rglob("*")
                       if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS and not p.name.startswith("."))
        if not files:
            raise UserError(f"no video files ({', '.join(VIDEO_EXTENSIONS)}) found under {source}")
        return ["path"], [{"path": str(p.resolve())} for p in files]
    if source.suffix.lower() != ".csv":
        raise UserError(f"--input {source} is neither a folder of videos nor a .csv file")
    columns, rows = read_csv(source)
    return columns, [absolute_paths(row, source.parent) for row in rows]


def absolute_paths(row: Row, base: Path) -> Row:
    out = dict(row)
    for column in ("path", "source"):
        text = (out.get(column) or "").strip()
        if text:
            path = Path(text).expanduser()
            out[column] = str(path if path.is_absolute() else (base / path).resolve())
    return out


def require_columns(columns: Sequence[str], needed: Sequence[str], stage: str, source: str | Path) -> None:
    missing = [c for c in needed if c not in columns]
    if missing:
        raise UserError(
            f"stage {stage} needs the columns {', '.join(needed)}; {source} lacks {listing(missing)} "
            "(run the earlier stages first: probe, then scenes)"
        )
