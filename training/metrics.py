"""Training metrics as the UI reads them: OUTPUT_DIR/metrics.jsonl (one JSON object per logged
step: step, loss, lr, samples_per_s, eta_s, elapsed_s, ...), OUTPUT_DIR/eval.jsonl (fixed-batch
eval losses: step, eval_loss), and TensorBoard events under OUTPUT_DIR/tensorboard when the
tensorboard package is installed.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

from opensora.io.outputs import atomic_write_text

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
EVAL_FILE = "eval.jsonl"


def read_jsonl(path: Path) -> list[dict]:
    """Every complete line (a line cut by a crash is ignored)."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def _truncate_after(path: Path, step: int | None) -> None:
    """Keep the lines up to `step` (all lines dropped for None): a resumed run logs the steps
    after its checkpoint again, and the file must stay one line per step."""
    if not path.exists():
        return
    kept = [] if step is None else [r for r in read_jsonl(path) if r.get("step", math.inf) <= step]
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))


class MetricsLog:
    def __init__(self, out_dir: Path, resume_step: int | None, tensorboard: bool, enabled: bool = True):
        """resume_step None: a fresh run (old lines removed); else lines after that step removed."""
        self.enabled = enabled
        self.metrics_path, self.eval_path = Path(out_dir) / METRICS_FILE, Path(out_dir) / EVAL_FILE
        self._tensorboard = None
        if not enabled:
            return
        for path in (self.metrics_path, self.eval_path):
            _truncate_after(path, resume_step)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional
                log.info("tensorboard is not installed; metrics go to %s only", self.metrics_path)
            else:
                self._tensorboard = SummaryWriter(str(Path(out_dir) / "tensorboard"), purge_step=resume_step)

    def _append(self, path: Path, record: dict) -> None:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self._tensorboard is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    self._tensorboard.add_scalar(f"train/{key}", value, record["step"])

    def log_step(self, record: dict) -> None:
        if self.enabled:
            self._append(self.metrics_path, record)

    def log_eval(self, step: int, eval_loss: float) -> None:
        if self.enabled:
            self._append(self.eval_path, {"step": step, "eval_loss": eval_loss})

    def close(self) -> None:
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None
