"""Preview frames as small animated WebP files: what the app's image shows and `--preview` writes.

WebP, not GIF: GIF's palette quantisation takes ~0.8 s for 33 frames of 32x56 on this CPU, WebP
(fastest method) ~35 ms, and every browser animates both."""

from __future__ import annotations

import itertools
import threading
import uuid
from pathlib import Path

import numpy as np

from opensora.io.atomic import publish, temp_path


def write_preview(frames: np.ndarray, frame_seconds: float, path: Path | str) -> Path:
    """An animated WebP of (t, h, w, 3) uint8 frames, looping, `frame_seconds` per frame, written to a
    temp file and renamed (a reader never sees half a file)."""
    from PIL import Image

    path = Path(path)
    tmp = temp_path(path, ".webp")
    try:
        images = [Image.fromarray(frame) for frame in frames]
        images[0].save(tmp, format="WEBP", save_all=True, append_images=images[1:], loop=0,
                       duration=max(20, round(1000 * frame_seconds)), quality=80, method=0)
        publish(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


class PreviewFiles:
    """A progress object's `preview` hook: each preview becomes a new file in `folder` (a new name
    each time, so a browser or Gradio's cache never shows a stale one); `latest` is the newest. The
    encoding runs on a writer thread (Pillow's encoder lets the sampler's thread go on), and a
    preview that arrives while one is written replaces any still waiting: only the newest matters.
    The folder keeps the newest `keep` files, so the one on screen is never deleted under it."""

    def __init__(self, folder: Path | str, keep: int = 4):
        self.folder, self.keep = Path(folder), keep
        self.latest: Path | None = None
        self._prefix = uuid.uuid4().hex[:8]
        self._count = itertools.count()
        self._lock = threading.Lock()
        self._pending: tuple[np.ndarray, float] | None = None
        self._writer: threading.Thread | None = None

    def __call__(self, frames: np.ndarray, frame_seconds: float) -> None:
        with self._lock:
            self._pending = (frames, frame_seconds)
            if self._writer is None:
                self._writer = threading.Thread(target=self._write_pending, name="preview-writer", daemon=True)
                self._writer.start()

    def flush(self) -> None:
        """Wait until every preview handed over is on disk."""
        with self._lock:
            writer = self._writer
        if writer is not None:
            writer.join()

    def _write_pending(self) -> None:
        while True:
            with self._lock:
                item, self._pending = self._pending, None
                if item is None:
                    self._writer = None
                    return
            self.folder.mkdir(parents=True, exist_ok=True)
            self.latest = write_preview(*item, self.folder / f"{self._prefix}-{next(self._count):04d}.webp")
            self._prune()

    def _prune(self) -> None:
        files = sorted(self.folder.glob("[!.]*.webp"), key=_modified)  # not the temp files being written
        for old in files[: -self.keep]:
            if old != self.latest:
                old.unlink(missing_ok=True)


def _modified(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:  # pruned meanwhile by another job's previews
        return 0


class PreviewFile:
    """`--preview PATH`: every preview overwrites one animated WebP (atomically)."""

    def __init__(self, path: Path | str):
        self.path = Path(path)

    def __call__(self, frames: np.ndarray, frame_seconds: float) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_preview(frames, frame_seconds, self.path)
