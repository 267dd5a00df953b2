"""OUTPUT_DIR/status.json and OUTPUT_DIR/train.log: what the UI shows about a run.

status.json (written atomically): {"state": "running"|"finished"|"failed"|"stopped",
"step": int, "total_steps": int, "message": str, "pid": int}.
train.log: every log line of the run (skipped data, checkpoints, errors) as plain text.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from opensora.io.outputs import atomic_write_text

STATUS_FILE = "status.json"
LOG_FILE = "train.log"
STATES = ("running", "finished", "failed", "stopped")


def write_status(out_dir: Path, state: str, step: int, total_steps: int, message: str = "") -> None:
    if state not in STATES:
        raise ValueError(f"state {state!r}; allowed: {', '.join(STATES)}")
    status = {
        "state": state, "step": step, "total_steps": total_steps, "message": message, "pid": os.getpid(),
        "updated": time.time(),
    }
    atomic_write_text(Path(out_dir) / STATUS_FILE, json.dumps(status) + "\n")


def read_status(out_dir: Path) -> dict | None:
    path = Path(out_dir) / STATUS_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def attach_log_file(out_dir: Path) -> logging.Handler:
    """Send every INFO+ log record of this process to OUTPUT_DIR/train.log (appending, so a
    resumed run continues the same file). Undo with `detach_log_file`."""
    handler = logging.FileHandler(Path(out_dir) / LOG_FILE, encoding="utf-8")
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    handler.previous_root_level = root.level  # restored on detach
    root.addHandler(handler)
    root.setLevel(min(root.level, logging.INFO))
    return handler


def detach_log_file(handler: logging.Handler) -> None:
    root = logging.getLogger()
    root.removeHandler(handler)
    root.setLevel(getattr(handler, "previous_root_level", root.level))
    handler.close()
