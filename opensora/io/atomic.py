"""Files that are never seen half-written, with ordinary permissions, and a lock across processes.

Each write goes to a hidden temp file in the target's folder (same filesystem), is fsynced and
renamed into place: a reader sees the old file or the new one. Temp names start with
`.<target name>.tmp-` so a sweep can recognise them.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

PathLike = str | os.PathLike


def _umask() -> int:
    # os.umask can only be read by setting it; put it straight back.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()  # what open() would give: mkstemp makes owner-only files


def temp_path(path: Path, suffix: str = "") -> Path:
    """A fresh hidden temp file beside `path` (created empty, ordinary mode)."""
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.tmp-", suffix=suffix, dir=path.parent)
    os.close(fd)
    os.chmod(name, FILE_MODE)
    return Path(name)


def publish(tmp: Path, path: Path) -> None:
    """fsync `tmp` and rename it to `path`."""
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        tmp.write_bytes(data)
        publish(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: PathLike, text: str) -> None:
    """UTF-8, newlines written exactly as given (no platform translation)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def save_safetensors_atomic(tensors: dict, path: PathLike, metadata: dict[str, str] | None = None) -> Path:
    """safetensors written to a temp file in the same folder, then renamed."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
        publish(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


@contextlib.contextmanager
def file_lock(path: PathLike):
    """An exclusive lock on `path` (created if needed) held for the `with` block, across processes.
    The OS drops it when the holder dies, so a killed writer never leaves it stuck."""
    with open(path, "a+b") as f:
        if os.name == "nt":
            import msvcrt

            f.seek(0)
            msvcrt.locking(f.fileno(), msvcrt.LK_LOCK, 1)
            try:
                yield
            finally:
                f.seek(0)
                msvcrt.locking(f.fileno(), msvcrt.LK_UNLCK, 1)
        else:
            import fcntl

            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    if os.name == "nt":  # os.kill would terminate the process there; assume alive (never sweep)
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    except OSError:
        return False
    return True
