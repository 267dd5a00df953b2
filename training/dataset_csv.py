"""Read a training set in the official Open-Sora CSV format.

Columns: ``path,text`` are required; ``num_frames,height,width,fps,aspect_ratio,motion_score``
are optional (other columns are ignored). Missing or blank size columns are probed from the
file (PyAV for videos, PIL for images) and cached in a JSON file beside the CSV, keyed by
path + mtime + size, so a large CSV is probed once. Images and videos can share one CSV: an image
is a 1-frame video. Relative paths resolve against the CSV's folder.

Bad rows (missing file, empty or unreadable file, unparsable numbers) are skipped with a warning
and listed in ``CsvDataset.skipped``; only a CSV without ``path`` or ``text`` columns is an error.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from opensora.errors import UserError
from opensora.io.video import is_image_path, probe_video

log = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("path", "text")
OPTIONAL_COLUMNS = ("num_frames", "height", "width", "fps", "aspect_ratio", "motion_score")
PROBED_COLUMNS = ("num_frames", "height", "width", "fps")

# The official Open-Sora data pipeline gives images this nominal fps; nothing divides by it.
IMAGE_FPS = 120.0

CACHE_VERSION = 1
MAX_LOGGED_SKIPS = 10  # per-row warnings beyond this are summarised in one line


@dataclass(frozen=True)
class SampleRecord:
    path: Path  # absolute
    text: str
    num_frames: int
    height: int
    width: int
    fps: float
    motion_score: float | None
    line: int  # line in the CSV (header = 1), for messages

    @property
    def is_image(self) -> bool:
        return is_image_path(self.path)

    @property
    def aspect_ratio(self) -> float:
        return self.height / self.width


@dataclass(frozen=True)
class SkippedRow:
    line: int
    path: str
    reason: str


@dataclass
class CsvDataset:
    csv_path: Path
    records: list[SampleRecord]
    skipped: list[SkippedRow]


class _BadRow(Exception):
    """A reason to skip one row."""


def probe_cache_path(csv_path: str | Path) -> Path:
    csv_path = Path(csv_path)
    return csv_path.with_name(csv_path.name + ".probe-cache.json")


def load_dataset_csv(csv_path: str | Path, use_probe_cache: bool = True) -> CsvDataset:
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise UserError(f"dataset CSV not found: {csv_path}")
    rows = _read_rows(csv_path)
    cache = _ProbeCache(probe_cache_path(csv_path), enabled=use_probe_cache)

    records: list[SampleRecord] = []
    skipped: list[SkippedRow] = []
    for line, row in rows:
        raw_path = (row.get("path") or "").strip()
        try:
            records.append(_parse_row(row, line, csv_path.parent, cache))
        except _BadRow as e:
            skipped.append(SkippedRow(line=line, path=raw_path, reason=str(e)))

    cache.save()
    _log_skips(csv_path, skipped, len(rows))
    return CsvDataset(csv_path=csv_path, records=records, skipped=skipped)


def _read_rows(csv_path: Path) -> list[tuple[int, dict[str, str]]]:
    # utf-8-sig: spreadsheet exports often start with a byte-order mark.
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        missing = [c for c in REQUIRED_COLUMNS if c not in columns]
        if missing:
            raise UserError(
                f"dataset CSV {csv_path} has columns {columns or '(none)'}; "
                f"required: {', '.join(REQUIRED_COLUMNS)} "
                f"(optional: {', '.join(OPTIONAL_COLUMNS)}); missing: {', '.join(missing)}"
            )
        rows = []
        for row in reader:
            clean = {(k or "").strip(): (v if isinstance(v, str) else "") for k, v in row.items()}
            rows.append((reader.line_num, clean))
    return rows


def _parse_row(row: dict[str, str], line: int, base: Path, cache: _ProbeCache) -> SampleRecord:
    raw_path = (row.get("path") or "").strip()
    if not raw_path:
        raise _BadRow("empty path")
    path = Path(raw_path).expanduser()
    if not path.is_absolute():
        path = base / path
    path = path.resolve()
    if not path.is_file():
        raise _BadRow(f"file not found: {path}")
    stat = path.stat()
    if stat.st_size == 0:
        raise _BadRow(f"file is empty (0 bytes): {path}")

    given = {c: _parse_number(row.get(c, ""), c) for c in PROBED_COLUMNS}
    if any(v is None for v in given.values()):
        probed = cache.get(path, stat) or cache.put(path, stat, _probe(path))
        given = {c: probed[c] if v is None else v for c, v in given.items()}

    num_frames, height, width = int(given["num_frames"]), int(given["height"]), int(given["width"])
    fps = float(given["fps"])
    if num_frames < 1 or height < 1 or width < 1 or fps <= 0:
        raise _BadRow(
            f"num_frames={num_frames}, height={height}, width={width}, fps={fps:g}; "
            "all must be >= 1 (fps > 0)"
        )
    return SampleRecord(
        path=path,
        text=row.get("text") or "",
        num_frames=num_frames,
        height=height,
        width=width,
        fps=fps,
        motion_score=_parse_number(row.get("motion_score", ""), "motion_score"),
        line=line,
    )


def _parse_number(text: str | None, column: str) -> float | None:
    text = (text or "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise _BadRow(f"{column} is {text!r}; must be a number") from None
    if not math.isfinite(value):
        raise _BadRow(f"{column} is {text!r}; must be a finite number")
    return value


def _probe(path: Path) -> dict[str, float]:
    if is_image_path(path):
        try:
            with Image.open(path) as img:
                width, height = img.size
        except (UnidentifiedImageError, OSError) as e:
            raise _BadRow(f"cannot read image {path}: {e}") from None
        return {"num_frames": 1, "height": height, "width": width, "fps": IMAGE_FPS}
    try:
        info = probe_video(path)
    except UserError as e:
        raise _BadRow(str(e)) from None
    return {"num_frames": info.num_frames, "height": info.height, "width": info.width, "fps": info.fps}


def _log_skips(csv_path: Path, skipped: list[SkippedRow], total: int) -> None:
    for s in skipped[:MAX_LOGGED_SKIPS]:
        log.warning("%s line %d skipped: %s", csv_path.name, s.line, s.reason)
    if skipped:
        log.warning(
            "%s: skipped %d of %d rows%s",
            csv_path,
            len(skipped),
            total,
            f" (first {MAX_LOGGED_SKIPS} listed)" if len(skipped) > MAX_LOGGED_SKIPS else "",
        )


class _ProbeCache:
    """JSON map from "path|mtime_ns|size" to probed sizes. Rewritten only when it changed, and
    then holding only the entries this load used, so stale entries (edited files) drop out."""

    def __init__(self, path: Path, enabled: bool):
        self.path = path
        self.enabled = enabled
        self.stored: dict[str, dict] = self._load() if enabled else {}
        self.used: dict[str, dict] = {}
        self.changed = False

    def _load(self) -> dict[str, dict]:
        if not self.path.is_file():
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            log.warning("ignoring unreadable probe cache %s (%s); probing again", self.path, e)
            return {}
        if not isinstance(data, dict) or data.get("version") != CACHE_VERSION:
            return {}
        entries = data.get("entries")
        return entries if isinstance(entries, dict) else {}

    @staticmethod
    def _key(path: Path, stat: os.stat_result) -> str:
        return f"{path}|{stat.st_mtime_ns}|{stat.st_size}"

    def get(self, path: Path, stat: os.stat_result) -> dict | None:
        key = self._key(path, stat)
        entry = self.stored.get(key)
        if not isinstance(entry, dict) or any(c not in entry for c in PROBED_COLUMNS):
            return None
        self.used[key] = entry
        return entry

    def put(self, path: Path, stat: os.stat_result, entry: dict) -> dict:
        self.used[self._key(path, stat)] = entry
        self.changed = True
        return entry

    def save(self) -> None:
        if not self.enabled or not (self.changed or set(self.used) != set(self.stored)):
            return
        payload = json.dumps({"version": CACHE_VERSION, "entries": self.used}, indent=0, sort_keys=True)
        try:
            # Write-then-rename so a crash never leaves half a cache behind.
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(payload)
            os.replace(tmp, self.path)
        except OSError as e:
            log.warning("could not write probe cache %s (%s); will probe again next time", self.path, e)
