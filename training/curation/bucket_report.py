"""How many clips land in each (resolution, aspect ratio, frames) bucket of a bucket table,
by the trainer's own assignment (``training/buckets.py``)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from training.buckets import BucketConfig, assign_buckets
from training.curation.table import Row


@dataclass(frozen=True)
class _Size:
    num_frames: int
    height: int
    width: int
    fps: float


def _size(row: Row) -> _Size | None:
    try:
        return _Size(int(float(row["num_frames"])), int(float(row["height"])), int(float(row["width"])), float(row["fps"]))
    except (KeyError, ValueError):
        return None


def bucket_report(rows: Sequence[Row], config: BucketConfig) -> dict:
    """{"table": source, "buckets": {"256px/16:9/33f": n, ...}, "no_bucket": n, "no_size": n}."""
    sizes = [_size(row) for row in rows]
    known = [s for s in sizes if s is not None]
    assignment = assign_buckets(known, config, describe=lambda s: f"{s.num_frames} frames {s.height}x{s.width}")
    reasons = Counter(reason.split(";")[0] for _, reason in assignment.unassigned)
    return {
        "table": config.source,
        "buckets": assignment.counts(),
        "no_bucket": len(assignment.unassigned),
        "no_bucket_reasons": dict(sorted(reasons.items())),
        "no_size": len(sizes) - len(known),
    }
