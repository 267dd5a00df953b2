"""Where generated videos go: numbered mp4 files, JSON sidecars and a results.csv index.

Layout of an output directory (shared by the CLI and the UI)::

    0000.mp4  0000.json  0001.mp4  0001.json  ...  results.csv

Every file is written atomically (temp file in the same directory, fsync, ``os.replace``) so a
crash or a concurrent reader never sees half a file.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch

from opensora.io.video import PathLike, write_video

RESULTS_CSV = "results.csv"
RESULTS_COLUMNS = ("index", "text", "seed", "path")
_NUMBERED = re.compile(r"^(\d{4,})\.(mp4|json)$")
_SECRET_KEY_PARTS = ("api_key", "token")


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)


def save_safetensors_atomic(
    tensors: dict[str, torch.Tensor], path: PathLike, metadata: dict[str, str] | None = None
) -> Path:
    """safetensors written to a temp file in the same folder, then renamed: readers see the old
    file or the new one, never half of one."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    os.close(fd)
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, tmp, metadata=metadata)
        os.chmod(tmp, 0o644)  # mkstemp makes owner-only files; these are ordinary outputs
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def atomic_write_text(path: PathLike, text: str) -> None:
    """UTF-8, newlines written exactly as given (no platform translation)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def _is_secret_key(key: str) -> bool:
    normalized = key.lower().replace("-", "_")
    return any(part in normalized for part in _SECRET_KEY_PARTS)


def strip_secrets(value: Any) -> Any:
    """Drop dict keys that look like credentials (containing "api_key" or "token", any case),
    at any nesting depth, so a prompt-refinement API key never lands in a sidecar."""
    if isinstance(value, dict):
        return {k: strip_secrets(v) for k, v in value.items() if not _is_secret_key(str(k))}
    if isinstance(value, (list, tuple)):
        return [strip_secrets(v) for v in value]
    return value


def _json_default(value: Any) -> Any:
    # Settings often carry Paths and numpy/torch scalars; store them readably instead of failing.
    if isinstance(value, (np.generic, torch.Tensor)) and getattr(value, "ndim", 0) == 0:
        return value.item()
    return str(value)


def _read_csv_rows(csv_path: Path) -> list[dict[str, str]]:
    # The gallery must still show videos when the index is missing or damaged.
    try:
        with open(csv_path, newline="", encoding="utf-8", errors="replace") as f:
            return list(csv.DictReader(f))
    except (OSError, csv.Error):
        return []


class OutputWriter:
    """Writes numbered results into one directory. Numbering continues from the highest
    existing ``NNNN.mp4``/``NNNN.json``, so runs never overwrite each other. One process should
    write a directory at a time; threads within it are serialized by a lock."""

    def __init__(self, output_dir: PathLike):
        self.output_dir = Path(output_dir)
        self._lock = threading.Lock()

    def next_index(self) -> int:
        highest = -1
        if self.output_dir.is_dir():
            for entry in os.scandir(self.output_dir):
                match = _NUMBERED.match(entry.name)
                if match:
                    highest = max(highest, int(match.group(1)))
        return highest + 1

    def write(
        self,
        video: np.ndarray | torch.Tensor,
        fps: float,
        settings: dict,
        text: str,
        seed: int,
    ) -> Path:
        """Write ``NNNN.mp4`` + ``NNNN.json`` (settings minus secrets) and append a row to
        results.csv. Returns the video path."""
        with self._lock:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            index = self.next_index()
            stem = f"{index:04d}"
            video_path = self.output_dir / f"{stem}.mp4"
            write_video(video_path, video, fps)
            sidecar = json.dumps(
                strip_secrets(settings), indent=2, ensure_ascii=False, default=_json_default
            )
            atomic_write_text(self.output_dir / f"{stem}.json", sidecar + "\n")
            rel_path = video_path.relative_to(self.output_dir).as_posix()
            self._append_result(index, text, seed, rel_path)
            return video_path

    def _append_result(self, index: int, text: str, seed: int, rel_path: str) -> None:
        # Rewrite the whole file atomically rather than appending in place: an interrupted
        # append could leave a half row that breaks every later read.
        csv_path = self.output_dir / RESULTS_CSV
        # Bytes, not text: existing content is kept verbatim even if someone saved it in
        # another encoding.
        existing = csv_path.read_bytes() if csv_path.is_file() else b""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        if not existing.strip():
            existing = b""
            writer.writerow(RESULTS_COLUMNS)
        elif not existing.endswith((b"\n", b"\r")):
            existing += b"\n"
        writer.writerow([index, text, seed, rel_path])
        atomic_write_bytes(csv_path, existing + buffer.getvalue().encode("utf-8"))

def list_outputs(output_dir: PathLike) -> list[dict[str, Any]]:
    """All numbered videos in ``output_dir``, newest (highest index) first.

    Each entry: ``index`` (int), ``path`` (Path of the mp4), ``settings`` (sidecar dict, or None
    when missing/broken), ``settings_broken`` (True when a sidecar exists but is not a JSON
    object), ``text`` and ``seed`` (from results.csv, None if it has no row for the video).
    """
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    rows = {row.get("index"): row for row in _read_csv_rows(output_dir / RESULTS_CSV)}
    entries = []
    for entry in os.scandir(output_dir):
        match = _NUMBERED.match(entry.name)
        if not match or match.group(2) != "mp4":
            continue
        index = int(match.group(1))
        settings, broken = _read_sidecar(output_dir / f"{match.group(1)}.json")
        row = rows.get(str(index), {})
        seed = row.get("seed")
        entries.append(
            {
                "index": index,
                "path": Path(entry.path),
                "settings": settings,
                "settings_broken": broken,
                "text": row.get("text"),
                "seed": int(seed) if seed and seed.lstrip("-").isdigit() else None,
            }
        )
    entries.sort(key=lambda e: e["index"], reverse=True)
    return entries


def _read_sidecar(path: Path) -> tuple[dict | None, bool]:
    """(settings, broken). A missing sidecar is not broken; unparsable or non-object JSON is."""
    if not path.is_file():
        return None, False
    try:
        settings = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None, True
    if not isinstance(settings, dict):
        return None, True
    return settings, False
