"""Train/val split by source video: every scene of one video lands on the same side, so the
validation set never holds another cut of a training clip."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from opensora.errors import UserError
from training.curation.table import Row


def source_of(row: Row) -> str:
    return (row.get("source") or "").strip() or row.get("path", "")


def split_by_source(rows: Sequence[Row], val_fraction: float, seed: int) -> list[str]:
    """"train" or "val" per row. round(val_fraction x sources) sources go to val, chosen by a
    seeded shuffle of the sorted sources (the same sets on every machine); with at least two
    sources and a fraction > 0 each side gets one or more."""
    if not 0 <= val_fraction < 1:
        raise UserError(f"--val-fraction is {val_fraction}; must be in [0, 1)")
    sources = sorted({source_of(row) for row in rows})
    count = round(val_fraction * len(sources))
    if val_fraction > 0 and len(sources) >= 2:
        count = min(max(count, 1), len(sources) - 1)
    order = list(sources)
    random.Random(seed).shuffle(order)
    val = set(order[:count])
    return ["val" if source_of(row) in val else "train" for row in rows]


def val_share(sides: Sequence[str]) -> float:
    return sum(s == "val" for s in sides) / len(sides) if sides else math.nan
