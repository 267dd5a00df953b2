"""Run one per-row stage over a CSV: resume, engine, progress bar with ETA, summary.

    summary = run_stage(motion.STAGE, MotionConfig(), "scenes.csv", "motion.csv", workers=2)

The input is a CSV (or, for probe, a folder of videos); the output CSV gets the input's columns
plus the stage's. A stage whose ``skip`` reason is set copies its input through with a notice.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from opensora.errors import UserError
from training.curation.engines import check_engine, ordered_results
from training.curation.resume import ResumableOutput, passthrough
from training.curation.stage import Stage, StageSummary
from training.curation.table import absolute_paths, discover_inputs, order_columns, read_csv, require_columns, row_key

log = logging.getLogger(__name__)

MAX_LOGGED_PROBLEMS = 10  # per run; the summary counts the rest


def resume_settings(config: Any) -> dict:
    """The settings a resumed run must share with the partial one: every config field except
    those marked ``metadata={"resume": False}`` (pacing, timeouts: they do not change results)."""
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.metadata.get("resume", True)}


def load_input(source: str | Path, allow_folder: bool) -> tuple[list[str], list[dict]]:
    source = Path(source)
    if allow_folder:
        return discover_inputs(source)
    if source.is_dir():
        raise UserError(f"input {source} is a folder; this stage reads a CSV (a folder of videos goes to probe)")
    columns, rows = read_csv(source)
    return columns, [absolute_paths(row, source.parent) for row in rows]


def run_stage(
    stage: Stage,
    config: Any,
    source: str | Path,
    output: str | Path,
    *,
    workers: int = 1,
    engine: str = "local",
    ray_address: str | None = None,
    overwrite: bool = False,
    skip: str | None = None,
    progress: bool = True,
) -> StageSummary:
    source, output = Path(source), Path(output)
    check_engine(workers, engine)
    if source.resolve() == output.resolve():
        raise UserError(f"input and output are the same file ({output}); a stage appends to its output")
    columns, rows = load_input(source, allow_folder=stage.name == "probe")
    if not skip:
        require_columns(columns, stage.needs, stage.name, source)
    summary = StageSummary(stage=stage.name, rows_in=len(rows), output=str(output))
    header = {"stage": stage.name, "settings": resume_settings(config)}
    started = time.monotonic()
    if skip:
        log.warning("%s: skipped: %s", stage.name, skip)
        passthrough(output, order_columns(columns), rows, header)
        summary.skipped, summary.rows_out = skip, len(rows)
        return summary

    keys = [row_key(row) for row in rows]
    out_columns = order_columns([*columns, *stage.columns])
    logged = 0
    with ResumableOutput(output, out_columns, header, keys, overwrite) as out:
        summary.resumed = out.done
        for entry in out.entries:
            summary.count(entry.rows, entry.reason, entry.counts)
        bar = tqdm(total=len(rows), initial=out.done, desc=stage.name, unit=stage.unit, file=sys.stderr,
                   disable=not progress, dynamic_ncols=True)
        with bar:
            pending = rows[out.done:]
            for result in ordered_results(stage.process, pending, config, workers, engine, ray_address):
                out.append(keys[out.done], result)  # done = the index of this row
                summary.count(len(result.rows), result.reason, result.counts)
                if result.reason and logged < MAX_LOGGED_PROBLEMS:
                    logged += 1
                    log.warning("%s: %s: %s", stage.name, result.reason, result.detail)
                bar.update(1)
    summary.seconds = time.monotonic() - started
    log.info("%s", summary.line())
    return summary
