"""OUTPUT_DIR/trainer.lock: one trainer per run folder.

The live trainer holds an exclusive `flock` on the file for as long as it runs and writes its pid
into it. The kernel drops the lock when the process ends, however it ends (kill -9 included), so a
lock file left behind is stale by construction: `lock_holder` only reports a pid while the lock is
really held. A second trainer on the same folder, started by the app after a restart or by hand,
is refused with the first one's pid before it touches status.json or a checkpoint.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from opensora.errors import UserError

try:
    import fcntl
except ImportError:  # Windows: no flock; fall back to asking whether the recorded pid is alive
    fcntl = None

LOCK_FILE = "trainer.lock"
ACQUIRE_TRIES = 20


class RunLock:
    """Held by the trainer process while it trains in `run_dir`; `release()` (or exit) frees it."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        # A few tries: the app's `lock_holder` probe holds a shared lock for an instant.
        for _ in range(ACQUIRE_TRIES):
            if _try_lock(fd, exclusive=True, path=self.path):
                break
            time.sleep(0.05)
        else:
            os.close(fd)
            pid = _read_pid(self.path)
            raise UserError(
                f"run folder {self.path.parent} is in use by another trainer (pid {pid if pid else 'unknown'}); "
                "stop that one first (Stop in the app, or kill its pid), then resume"
            )
        os.ftruncate(fd, 0)
        os.write(fd, (json.dumps({"pid": os.getpid(), "started": time.time()}) + "\n").encode())
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        # The file stays (deleting it would race a second trainer opening it); unlocked, it is stale.
        os.close(self._fd)
        self._fd = None


def lock_holder(run_dir: Path) -> int | None:
    """pid of the trainer holding RUN_DIR's lock; None when nobody holds it (no file, or stale)."""
    path = Path(run_dir) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        if _try_lock(fd, exclusive=False, path=path):
            return None  # we got it, so nobody holds it: a stale file
    finally:
        os.close(fd)  # also drops our probe lock
    for _ in range(20):  # the holder writes its pid right after locking
        pid = _read_pid(path)
        if pid:
            return pid
        time.sleep(0.01)
    return -1  # held, pid not (yet) readable


def _try_lock(fd: int, exclusive: bool, path: Path) -> bool:
    if fcntl is None:
        pid = _read_pid(path)
        return not (pid and pid != os.getpid() and _alive(pid))
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _read_pid(path: Path) -> int | None:
    try:
        pid = json.loads(path.read_text(encoding="utf-8")).get("pid")
    except (OSError, ValueError, AttributeError):
        return None
    return pid if isinstance(pid, int) and pid > 0 else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
