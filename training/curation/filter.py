"""Stage filter: the last one. Keeps the rows a ``--where`` expression accepts, splits train/val
by source video, and counts clips per bucket of a bucket table.

It needs the whole table at once (the split groups rows), runs in this process in a moment, and
writes its outputs atomically: OUT (every kept row, with ``split`` when there is a val side),
OUT's ``.train.csv`` / ``.val.csv`` siblings when ``val_fraction`` > 0. Rerunning it simply
rewrites them. Rows are sorted by source, then start time, so the file does not depend on how
earlier stages were run.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from opensora.errors import UserError
from training.buckets import load_bucket_config
from training.config import bucket_config_path
from training.curation.bucket_report import bucket_report
from training.curation.runner import load_input
from training.curation.split import source_of, split_by_source
from training.curation.stage import StageSummary
from training.curation.table import Row, frame_range, order_columns, write_csv
from training.curation.where import compile_where

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FilterConfig:
    where: str = ""  # "": keep every row
    val_fraction: float = 0.0
    seed: int = 0
    buckets: str = ""  # bucket table for the report: presets/buckets-NAME.toml by NAME, or a path

    def __post_init__(self) -> None:
        if not 0 <= self.val_fraction < 1:
            raise UserError(f"--val-fraction is {self.val_fraction}; must be in [0, 1)")


def split_paths(output: str | Path) -> tuple[Path, Path]:
    output = Path(output)
    return output.with_suffix(".train.csv"), output.with_suffix(".val.csv")


def _order_key(row: Row) -> tuple:
    try:
        start = float(row.get("start_s") or 0)
    except ValueError:
        start = 0.0
    return source_of(row), start, frame_range(row)[0], row.get("path", "")


def run_filter(config: FilterConfig, source: str | Path, output: str | Path, progress: bool = True) -> StageSummary:
    started = time.monotonic()
    source, output = Path(source), Path(output)
    if source.resolve() == output.resolve():
        raise UserError(f"input and output are the same file ({output})")
    columns, rows = load_input(source, allow_folder=False)
    keep = compile_where(config.where, columns) if config.where.strip() else None
    table = load_bucket_config(bucket_config_path(config.buckets)) if config.buckets else None
    summary = StageSummary(stage="filter", rows_in=len(rows), output=str(output))

    kept = []
    for row in tqdm(rows, desc="filter", unit="clip", file=sys.stderr, disable=not progress, dynamic_ncols=True):
        accepted = keep is None or keep(row)
        summary.count(int(accepted), None if accepted else "where")
        if accepted:
            kept.append(row)
    kept.sort(key=_order_key)

    uncut = sum(frame_range(row)[1] is not None for row in kept)
    if uncut:
        summary.counts["uncut scene rows"] = uncut
        log.warning("filter: %d rows are scene ranges inside longer files (scenes --no-cut); the trainer "
                    "reads whole files, so run scenes with --cut for a training set", uncut)
    out_columns = order_columns(columns)
    if config.val_fraction > 0:
        sides = split_by_source(kept, config.val_fraction, config.seed)
        kept = [dict(row, split=side) for row, side in zip(kept, sides)]
        out_columns = order_columns([*out_columns, "split"])
        train_path, val_path = split_paths(output)
        for path, side in ((train_path, "train"), (val_path, "val")):
            part = [row for row in kept if row["split"] == side]
            write_csv(path, out_columns, part)
            summary.counts[f"{side} rows"] = len(part)
        summary.counts["val sources"] = len({source_of(r) for r in kept if r["split"] == "val"})
        summary.counts["train sources"] = len({source_of(r) for r in kept if r["split"] == "train"})
    write_csv(output, out_columns, kept)
    if table is not None:
        summary.report = bucket_report(kept, table)
        for key, count in summary.report["buckets"].items():
            log.info("filter: bucket %s: %d clips", key, count)
    summary.seconds = time.monotonic() - started
    log.info("%s", summary.line())
    return summary
