"""The whole chain, ``python -m training prepare``: each stage reads the CSV the one before wrote.

Intermediate CSVs live in ``OUTPUT.stages/NN-STAGE.csv`` (each resumable on its own, so rerunning
the same command after a crash goes on where it stopped); the last stage writes OUTPUT. A stage
with nothing to work with (aesthetic without weights, caption without a server) is skipped with
a notice and the next stage reads the previous file. ``--engine ray`` opens one Ray session for
the whole chain.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

from opensora.errors import UserError
from training.curation import aesthetic, caption, motion, ocr, probe, scenes
from training.curation.aesthetic import AestheticConfig
from training.curation.caption import CaptionConfig
from training.curation.engines import check_engine, ray_session
from training.curation.filter import FilterConfig, run_filter
from training.curation.motion import MotionConfig
from training.curation.ocr import OcrConfig
from training.curation.probe import ProbeConfig
from training.curation.runner import run_stage
from training.curation.scenes import ScenesConfig
from training.curation.stage import StageSummary

log = logging.getLogger(__name__)

STAGE_ORDER = ("probe", "scenes", "motion", "ocr", "aesthetic", "caption", "filter")


@dataclass
class ChainConfig:
    scenes: ScenesConfig
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    motion: MotionConfig = field(default_factory=MotionConfig)
    ocr: OcrConfig = field(default_factory=OcrConfig)
    aesthetic: AestheticConfig = field(default_factory=AestheticConfig)
    caption: CaptionConfig = field(default_factory=CaptionConfig)
    filter: FilterConfig = field(default_factory=FilterConfig)


def parse_stages(text: str) -> list[str]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [n for n in names if n not in STAGE_ORDER]
    if unknown or not names or len(set(names)) != len(names):
        raise UserError(f"--stages {text!r}: give each of {', '.join(STAGE_ORDER)} at most once, comma-separated"
                        + (f"; unknown: {', '.join(unknown)}" if unknown else ""))
    ordered = [n for n in STAGE_ORDER if n in names]
    if names != ordered:
        raise UserError(f"--stages {text!r}: stages run in the order {', '.join(STAGE_ORDER)}; write {','.join(ordered)}")
    return names


def work_dir(output: str | Path) -> Path:
    output = Path(output)
    return output.with_name(output.name + ".stages")


def skip_reason(name: str, config: ChainConfig) -> str | None:
    if name == "aesthetic":
        return aesthetic.skip_reason(config.aesthetic)
    if name == "caption":
        return caption.skip_reason(config.caption)
    return None


def run_pipeline(
    source: str | Path,
    output: str | Path,
    stages: list[str],
    config: ChainConfig,
    *,
    workers: int = 1,
    engine: str = "local",
    ray_address: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> list[StageSummary]:
    source, output = Path(source), Path(output)
    check_engine(workers, engine)
    if source.is_dir() and stages[0] != "probe":
        raise UserError(f"--input {source} is a folder of videos; the first stage must be probe (got {stages[0]})")
    modules = {"probe": probe, "scenes": scenes, "motion": motion, "ocr": ocr, "aesthetic": aesthetic, "caption": caption}
    summaries: list[StageSummary] = []
    current = source
    session = ray_session(workers, ray_address) if engine == "ray" else contextlib.nullcontext()
    with session:
        for number, name in enumerate(stages, start=1):
            last = number == len(stages)
            target = output if last else work_dir(output) / f"{number:02d}-{name}.csv"
            if name == "filter":
                summaries.append(run_filter(config.filter, current, target, progress=progress))
                current = target
                continue
            skip = skip_reason(name, config)
            if skip and not last:
                log.warning("%s: skipped: %s", name, skip)
                rows = summaries[-1].rows_out if summaries else 0
                summaries.append(StageSummary(stage=name, rows_in=rows, rows_out=rows, skipped=skip))
                continue
            summaries.append(run_stage(
                modules[name].STAGE, getattr(config, name), current, target, workers=workers, engine=engine,
                ray_address=ray_address, overwrite=overwrite, skip=skip, progress=progress,
            ))
            current = target
    return summaries
