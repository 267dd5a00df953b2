"""Checkpoint folders, written atomically, pruned to the last K, found again on resume.

    OUTPUT_DIR/checkpoints/step-000120/
        lora.safetensors | model.safetensors   the weights, same format as the final output
        ema.safetensors                        EMA weights (when EMA is on)
        optimizer.safetensors, optimizer.json  optimizer tensors + param groups
        scheduler.json  loader.json  trainer.json
        rng.safetensors, rng.json              global RNG states per rank
        COMPLETE                               written last

A checkpoint is first written to `step-000120.tmp-XXXX/` and renamed to `step-000120/` only
after every file (and COMPLETE) is on disk, so a crash or `kill -9` at any moment leaves either
the previous checkpoints or the new one, never half of one. `latest_checkpoint` only considers
`step-NNNNNN` folders holding COMPLETE; leftover temp folders are deleted on the next start.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from opensora.errors import UserError

log = logging.getLogger(__name__)

COMPLETE_MARKER = "COMPLETE"
_STEP_DIR = re.compile(r"^step-(\d{6,})$")
_TEMP_DIR = re.compile(r"^step-\d{6,}\.(tmp|old)-")


@dataclass
class CheckpointData:
    step: int
    tensors: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)  # file stem -> tensors
    json: dict[str, object] = field(default_factory=dict)  # file stem -> JSON value
    metadata: dict[str, dict[str, str]] = field(default_factory=dict)  # file stem -> safetensors metadata


def step_dir_name(step: int) -> str:
    return f"step-{step:06d}"


def complete_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """(step, folder) of every complete checkpoint, oldest first."""
    if not Path(root).is_dir():
        return []
    found = []
    for path in Path(root).iterdir():
        match = _STEP_DIR.match(path.name)
        if match and path.is_dir() and (path / COMPLETE_MARKER).is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def step_of(path: Path) -> int | None:
    """The step of a step-NNNNNN folder, from its name; None for any other name."""
    match = _STEP_DIR.match(Path(path).name)
    return int(match.group(1)) if match else None


def latest_checkpoint(root: Path) -> Path | None:
    found = complete_checkpoints(root)
    return found[-1][1] if found else None


def remove_incomplete(root: Path) -> list[Path]:
    """Delete temp folders and step folders without COMPLETE (left by a crash); returns them."""
    removed = []
    if not Path(root).is_dir():
        return removed
    for path in Path(root).iterdir():
        if not path.is_dir():
            continue
        if _TEMP_DIR.match(path.name) or (_STEP_DIR.match(path.name) and not (path / COMPLETE_MARKER).is_file()):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # not possible on every platform; the rename is still atomic
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_checkpoint(root: Path, data: CheckpointData) -> Path:
    """Write every file into a temp folder, then rename it into place. Returns the final folder."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / step_dir_name(data.step)
    tmp = Path(tempfile.mkdtemp(prefix=f"{final.name}.tmp-", dir=root))
    tmp.chmod(0o755)  # mkdtemp makes an owner-only folder
    try:
        for stem, tensors in data.tensors.items():
            path = tmp / f"{stem}.safetensors"
            save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=data.metadata.get(stem))
            _fsync_file(path)
        for stem, value in data.json.items():
            path = tmp / f"{stem}.json"
            path.write_text(json.dumps(value, indent=1, sort_keys=True), encoding="utf-8")
            _fsync_file(path)
        (tmp / COMPLETE_MARKER).write_text(json.dumps({"step": data.step}) + "\n", encoding="utf-8")
        _fsync_file(tmp / COMPLETE_MARKER)
        if final.exists():  # the same step saved again (e.g. stopped right after a periodic save)
            old = Path(tempfile.mkdtemp(prefix=f"{final.name}.old-", dir=root))
            os.replace(final, old / final.name)
            shutil.rmtree(old, ignore_errors=True)
        os.replace(tmp, final)
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def read_checkpoint(path: Path) -> CheckpointData:
    path = Path(path)
    if not (path / COMPLETE_MARKER).is_file():
        raise UserError(f"{path} is not a complete checkpoint (no {COMPLETE_MARKER} file)")
    file = path / COMPLETE_MARKER
    try:
        step = int(json.loads(file.read_text())["step"])
        data = CheckpointData(step=step)
        for file in sorted(path.glob("*.safetensors")):
            data.tensors[file.stem] = load_file(str(file))
        for file in sorted(path.glob("*.json")):
            data.json[file.stem] = json.loads(file.read_text(encoding="utf-8"))
    except Exception as err:  # noqa: BLE001 - safetensors raises its own error type for truncated files
        raise UserError(f"checkpoint {path} is unreadable: {file.name}: {err}") from None
    return data


def prune(root: Path, keep_last: int) -> list[Path]:
    """Delete all but the newest `keep_last` complete checkpoints."""
    found = complete_checkpoints(root)
    old = [path for _, path in found[: max(len(found) - keep_last, 0)]]
    for path in old:
        shutil.rmtree(path, ignore_errors=True)
    return old


class CheckpointSaver:
    """Writes checkpoints (in a background thread when `async_save`) and keeps the last K.

    The caller hands over CPU copies, so training may go on while the files are written; at most
    one write is in flight, and `wait()` re-raises a failed write."""

    def __init__(self, root: Path, keep_last: int, async_save: bool):
        self.root, self.keep_last, self.async_save = Path(root), keep_last, async_save
        self.last_saved_step: int | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def save(self, data: CheckpointData) -> None:
        self.wait()
        if self.async_save:
            self._thread = threading.Thread(target=self._write, args=(data,), name="checkpoint-writer", daemon=True)
            self._thread.start()
        else:
            self._write(data)
            self._raise_error()
        self.last_saved_step = data.step

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._raise_error()

    def _raise_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _write(self, data: CheckpointData) -> None:
        try:
            path = write_checkpoint(self.root, data)
            removed = [old.name for old in prune(self.root, self.keep_last)]
            # One line per save: the UI shows the log's tail, which must not fill up with these.
            log.info("saved checkpoint %s%s", path.name, f" (removed {', '.join(removed)})" if removed else "")
        except BaseException as err:  # handed to the training thread by wait()
            self._error = err
