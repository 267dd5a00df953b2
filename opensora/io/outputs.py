"""Where generated videos go: numbered mp4 files, JSON sidecars and a results.csv index.

Layout of an output directory (shared by the CLI, the UI and any number of processes)::

    0000.mp4  0000.json  0001.mp4  0001.json  0001.png  ...  results.csv  references/

A video and its sidecar (and the text -> image -> video first frame, `NNNN.png`, when there is one)
are one unit: an index is claimed by creating `.NNNN.claim` exclusively (it holds the writer's pid),
the files are written under temp names, the image and the sidecar are renamed into place first and
the mp4 last, the results.csv row is appended under a lock, then the claim goes. A writer killed
midway leaves a claim whose pid is dead; `sweep()` (run by every writer) removes its temp files and a
sidecar or image without its video, and restores a missing csv row. Each mp4 also carries its sidecar's
JSON in its `comment` tag (`opensora.io.embedded_settings`). `delete()` removes a unit the same way
round, and leaves `.NNNN.deleted` so a number is never given out twice.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import shutil
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch

from opensora.errors import UserError
from opensora.io.atomic import (  # noqa: F401 - re-exported: the trainer writes through these
    FILE_MODE,
    atomic_write_bytes,
    atomic_write_text,
    file_lock,
    pid_alive,
    publish,
    save_safetensors_atomic,
    temp_path,
)
from opensora.io.embedded_settings import settings_tags
from opensora.io.video import PathLike, encode_png, encode_video

RESULTS_CSV = "results.csv"
RESULTS_COLUMNS = ("index", "text", "seed", "path")
REFERENCES_DIR = "references"
IMAGE_FIELD = "t2i2v_image"  # the sidecar key naming a video's first-frame image file
_NUMBERED = re.compile(r"^(\d{4,})\.(mp4|json|png)$")
_CLAIM = re.compile(r"^\.(\d{4,})\.claim$")
_DELETED = re.compile(r"^\.(\d{4,})\.deleted$")  # the newest deleted index: numbers are never reused
_TEMP = re.compile(r"^\.(\d{4,})\.(mp4|json|png)\.tmp-")
_SECRET_KEY_PARTS = ("api_key", "token")


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


def _free_space(folder: Path) -> str:
    try:
        return f"{shutil.disk_usage(folder).free / 2**20:.0f} MB free"
    except OSError:
        return "free space unknown"


def output_error(folder: Path, err: OSError) -> UserError:
    """A full disk, a read-only or vanished folder: one line naming the folder and its free space."""
    reason = err.strerror or str(err)
    return UserError(f"cannot write to the output folder {folder}: {reason} ({_free_space(folder)})")


def image_path_of(video_path: Path) -> Path:
    """Where a video's text -> image -> video first frame goes: NNNN.png beside NNNN.mp4."""
    return Path(video_path).with_suffix(".png")


def store_reference(data: bytes, suffix: str, output_dir: Path, name: str = "") -> str:
    """`data` kept (once, by content) in OUTPUT_DIR/references/: as <sha256 prefix>/<name> when the
    upload's `name` is known (so notices and History still say "wide.png"), else <sha256 prefix><suffix>."""
    digest = hashlib.sha256(data).hexdigest()[:16]
    safe_name = re.sub(r"[^\w.-]", "_", Path(name).name)[-80:].lstrip(".")
    relative = f"{digest}/{safe_name}" if safe_name else f"{digest}{suffix.lower()}"
    target = output_dir / REFERENCES_DIR / relative
    if not target.is_file():
        try:
            atomic_write_bytes(target, data)
        except OSError as err:
            raise output_error(output_dir, err) from None
    return str(target)


def copy_reference(path: str, output_dir: Path) -> str:
    """A reference file copied (once, by content) into OUTPUT_DIR/references/; the copy's path."""
    source = Path(path)
    if output_dir / REFERENCES_DIR in source.parents:
        return str(source)
    return store_reference(source.read_bytes(), source.suffix, output_dir, name=source.name)


def save_last_frame(video_path: PathLike, output_dir: Path) -> str:
    """A video's last frame as a PNG reference in OUTPUT_DIR/references/ (to start an image-to-video on it)."""
    from PIL import Image

    from opensora.io.reference import _last_video_frame

    buffer = io.BytesIO()
    Image.fromarray(_last_video_frame(Path(video_path))).save(buffer, format="PNG")
    return store_reference(buffer.getvalue(), ".png", Path(output_dir))


class OutputWriter:
    """Writes numbered results into one directory; any number of threads and processes may
    write the same directory at once (see the module docstring)."""

    def __init__(self, output_dir: PathLike):
        self.output_dir = Path(output_dir).absolute()
        self._lock = threading.Lock()

    def check_writable(self) -> None:
        """Before any model loads: the folder exists (or can be made) and takes files."""
        folder = self.output_dir
        if folder.exists() and not folder.is_dir():
            raise UserError(f"the output folder {folder} is a file, not a folder")
        try:
            folder.mkdir(parents=True, exist_ok=True)
            temp_path(folder / ".write-test").unlink()
        except OSError as err:
            raise output_error(folder, err) from None
        self.sweep()

    def next_index(self) -> int:
        highest = -1
        if self.output_dir.is_dir():
            for entry in os.scandir(self.output_dir):
                match = _NUMBERED.match(entry.name) or _CLAIM.match(entry.name) or _DELETED.match(entry.name)
                if match:
                    highest = max(highest, int(match.group(1)))
        return highest + 1

    def _claim(self) -> tuple[int, Path]:
        index = self.next_index()
        while True:
            claim = self.output_dir / f".{index:04d}.claim"
            try:
                fd = os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                index += 1
                continue
            with os.fdopen(fd, "w") as f:
                f.write(str(os.getpid()))
            # A writer that finished this index already removed its claim: its files are here.
            if (self.output_dir / f"{index:04d}.mp4").exists() or (self.output_dir / f"{index:04d}.json").exists():
                claim.unlink()
                index += 1
                continue
            return index, claim

    def write(self, video: np.ndarray | torch.Tensor, fps: float, settings: dict, text: str, seed: int,
              image: torch.Tensor | None = None) -> Path:
        """Write ``NNNN.mp4`` + ``NNNN.json`` (settings minus secrets) and append a row to
        results.csv. `image` (float (3, H, W) in [-1, 1], the text -> image -> video first frame) is
        written as ``NNNN.png`` in the same unit and named in the sidecar (`t2i2v_image`). Returns
        the video path."""
        settings = strip_secrets(settings)
        with self._lock:
            try:
                self.output_dir.mkdir(parents=True, exist_ok=True)
                index, claim = self._claim()
            except OSError as err:
                raise output_error(self.output_dir, err) from None
            stem = f"{index:04d}"
            video_path, sidecar_path = self.output_dir / f"{stem}.mp4", self.output_dir / f"{stem}.json"
            image_path = image_path_of(video_path)
            temps: list[Path] = []
            try:
                if image is not None:
                    settings = {**settings, IMAGE_FIELD: image_path.name}
                sidecar = json.dumps(settings, indent=2, ensure_ascii=False, default=_json_default) + "\n"
                temps.append(temp_path(video_path, suffix=".mp4"))
                encode_video(temps[-1], video, fps, metadata=settings_tags(sidecar))  # the mp4 carries its settings
                if image is not None:
                    temps.append(temp_path(image_path, suffix=".png"))
                    encode_png(temps[-1], image)
                    publish(temps[-1], image_path)
                temps.append(temp_path(sidecar_path))
                temps[-1].write_text(sidecar, encoding="utf-8")
                publish(temps[-1], sidecar_path)
                publish(temps[0], video_path)  # last: a video is listed only once its sidecar is there
                self._append_result(index, text, seed, video_path.name)
            except BaseException as err:
                if not video_path.exists():  # never a sidecar or image without its video
                    sidecar_path.unlink(missing_ok=True)
                    if image is not None:
                        image_path.unlink(missing_ok=True)
                if isinstance(err, OSError):
                    raise output_error(self.output_dir, err) from None
                raise
            finally:
                for tmp in temps:
                    tmp.unlink(missing_ok=True)
                claim.unlink(missing_ok=True)
            return video_path

    def delete(self, index: int) -> None:
        """Remove video `index` (mp4, sidecar, first-frame image, results.csv row) as one unit, safe beside
        other writers: the index is claimed (no writer takes it meanwhile), the files are moved to temp names
        (the video first: gone from every listing at once), the csv is rewritten without its row under the
        writers' lock, then the moved files go; its number is never given out again. On an error everything
        is put back; a delete killed midway leaves temp files and a dead claim that `sweep()` removes (and at
        worst the csv row of a gone video)."""
        stem = f"{index:04d}"
        video_path = self.output_dir / f"{stem}.mp4"
        claim = self.output_dir / f".{stem}.claim"
        with self._lock:
            try:
                if claim.exists():
                    self.sweep()  # a claim left by a dead writer goes; a live one stays and refuses below
                fd = os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                raise UserError(f"video {stem}.mp4 is being written or deleted right now; try again") from None
            except OSError as err:
                raise output_error(self.output_dir, err) from None
            with os.fdopen(fd, "w") as f:
                f.write(str(os.getpid()))
            moved: list[tuple[Path, Path]] = []
            try:
                if not video_path.is_file():
                    raise UserError(f"there is no video {stem}.mp4 in {self.output_dir}")
                for path in (video_path, self.output_dir / f"{stem}.json", image_path_of(video_path)):
                    if path.exists():
                        moved.append((path, temp_path(path, suffix=path.suffix)))
                        os.replace(path, moved[-1][1])
                self._leave_tombstone(index)  # first: a failed delete at worst skips a number
                self._remove_rows(index)
            except BaseException as err:
                for path, tmp in reversed(moved):  # not deleted after all: everything back in place
                    os.replace(tmp, path)
                moved = []
                if isinstance(err, OSError):
                    raise output_error(self.output_dir, err) from None
                raise
            finally:
                for _, tmp in moved:
                    tmp.unlink(missing_ok=True)
                claim.unlink(missing_ok=True)

    def _leave_tombstone(self, index: int) -> None:
        """`.NNNN.deleted`, so the next video never takes the number of a deleted one (whose name a queue
        record or a shared link may still hold); only the highest tombstone matters, the others go."""
        (self.output_dir / f".{index:04d}.deleted").touch()
        tombstones = {int(m.group(1)): m.group(0) for m in map(_DELETED.match, os.listdir(self.output_dir)) if m}
        for number, name in tombstones.items():
            if number < max(tombstones):
                (self.output_dir / name).unlink(missing_ok=True)

    def _remove_rows(self, index: int) -> None:
        """results.csv rewritten (atomically) without the rows of `index`, under the lock appends take."""
        csv_path = self.output_dir / RESULTS_CSV
        with file_lock(self.output_dir / f".{RESULTS_CSV}.lock"):
            if not csv_path.is_file():
                return
            # surrogateescape: bytes that are not UTF-8 go back exactly as they were.
            text = csv_path.read_bytes().decode("utf-8", errors="surrogateescape")
            rows = list(csv.reader(io.StringIO(text, newline="")))
            if not rows:
                return
            column = rows[0].index("index") if "index" in rows[0] else 0
            kept = [rows[0]] + [row for row in rows[1:] if len(row) <= column or row[column] != str(index)]
            if len(kept) == len(rows):
                return
            buffer = io.StringIO()
            csv.writer(buffer, lineterminator="\n").writerows(kept)
            atomic_write_bytes(csv_path, buffer.getvalue().encode("utf-8", errors="surrogateescape"))

    def _append_result(self, index: int, text: str, seed: int, rel_path: str) -> None:
        """One row appended in place under a lock shared by every writer of the folder."""
        csv_path = self.output_dir / RESULTS_CSV
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        with file_lock(self.output_dir / f".{RESULTS_CSV}.lock"):
            size = csv_path.stat().st_size if csv_path.is_file() else 0
            prefix = b""
            if size == 0:
                writer.writerow(RESULTS_COLUMNS)
            else:
                with open(csv_path, "rb") as f:
                    f.seek(size - 1)
                    if f.read(1) not in (b"\n", b"\r"):
                        prefix = b"\n"
            writer.writerow([index, text, seed, rel_path])
            with open(csv_path, "ab") as f:
                f.write(prefix + buffer.getvalue().encode("utf-8"))  # one write: a whole row or none
                f.flush()
                os.fsync(f.fileno())
            if size == 0:
                os.chmod(csv_path, FILE_MODE)

    def sweep(self) -> None:
        """Clean up after writers that died: their temp files, a sidecar whose video never
        arrived, the csv row of a video that did."""
        if not self.output_dir.is_dir():
            return
        names = os.listdir(self.output_dir)
        live = set()
        for name in names:
            match = _CLAIM.match(name)
            if not match:
                continue
            claim = self.output_dir / name
            try:
                pid = int(claim.read_text() or 0)
            except (OSError, ValueError):
                pid = 0
            if pid_alive(pid):
                live.add(match.group(1))
                continue
            stem = match.group(1)
            video, sidecar = self.output_dir / f"{stem}.mp4", self.output_dir / f"{stem}.json"
            if not video.exists():
                sidecar.unlink(missing_ok=True)
                image_path_of(video).unlink(missing_ok=True)
            elif sidecar.exists():
                self._restore_row(int(stem), sidecar)
            claim.unlink(missing_ok=True)
        for name in names:
            match = _TEMP.match(name)
            if match and match.group(1) not in live:
                (self.output_dir / name).unlink(missing_ok=True)

    def _restore_row(self, index: int, sidecar: Path) -> None:
        rows = _read_csv_rows(self.output_dir / RESULTS_CSV)
        if any(row.get("index") == str(index) for row in rows):
            return
        settings, _ = _read_sidecar(sidecar)
        settings = settings or {}
        self._append_result(index, settings.get("prompt", ""), settings.get("seed", ""), f"{index:04d}.mp4")


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


def delete_job_outputs(output_dir: PathLike, job_id: str) -> int:
    """Remove what a queue job had written (its sidecars carry its `job_id`), each video as
    `OutputWriter.delete` does. Returns how many videos went."""
    indices = [e["index"] for e in list_outputs(output_dir) if (e["settings"] or {}).get("job_id") == job_id]
    writer = OutputWriter(output_dir)
    for index in indices:
        writer.delete(index)
    return len(indices)
