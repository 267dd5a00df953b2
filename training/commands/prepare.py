"""`python -m training prepare`: from a folder of raw videos (or a CSV) to a training CSV, and
`python -m training prepare-STAGE IN.csv OUT.csv`: one stage of it (see training/curation/README.md).

This module is the `prepare` command itself; PROBE, SCENES, ... are the per-stage commands, with
the same `add_arguments(parser)` / `run(args) -> int` pair. Each stage's flags are defined once
below and shared by its own command and the chain. The curation modules (OpenCV, RapidOCR,
PySceneDetect, Ray) are imported only when a command runs.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

STAGES = "probe,scenes,motion,ocr,aesthetic,caption,filter"


# --------------------------------------------------------------------------- flags per stage


def _common_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("running")
    group.add_argument("--workers", type=int, default=1, metavar="N",
                       help="files processed at once (processes; Ray tasks with --engine ray) (default 1)")
    group.add_argument("--engine", choices=("local", "ray"), default="local",
                       help="local: a process pool on this machine; ray: the same stage functions as Ray tasks (default local)")
    group.add_argument("--ray-address", default=None, metavar="ADDR",
                       help="Ray cluster to use with --engine ray (e.g. ray://head:10001 or auto); none: a local cluster of --workers CPUs")
    group.add_argument("--overwrite", action="store_true",
                       help="start again instead of resuming a partial output (its rows and progress file are deleted)")
    group.add_argument("--no-progress", action="store_true", help="draw no progress bar on stderr")


def _scenes_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("scenes")
    group.add_argument("--adaptive-threshold", type=float, default=2.0, metavar="X",
                       help="AdaptiveDetector: how far a frame's change must stand out of its neighbours' to be a cut (official: 2.0)")
    group.add_argument("--min-content-val", type=float, default=10.0, metavar="X",
                       help="AdaptiveDetector: the least content change that can be a cut (official: 10)")
    group.add_argument("--min-scene-frames", type=int, default=15, metavar="N", help="no two cuts closer than this (default 15)")
    group.add_argument("--min-seconds", type=float, default=1.0, metavar="S", help="drop scenes shorter than this (default 1)")
    group.add_argument("--max-seconds", type=float, default=0.0, metavar="S",
                       help="split longer scenes into equal parts no longer than this (default 0: never)")
    group.add_argument("--cut", action=argparse.BooleanOptionalAction, default=True,
                       help="write each scene as its own clip (H.264 mp4, PyAV); --no-cut keeps start_frame/end_frame "
                       "ranges into the source instead (default: cut)")
    group.add_argument("--clips-dir", default=None, metavar="DIR", help="where cut clips go (default: OUTPUT_clips/ beside the output CSV)")


def _scenes_config(args, output: Path):
    from training.curation.scenes import ScenesConfig

    clips = args.clips_dir or str(output.with_name(output.stem + "_clips"))
    return ScenesConfig(adaptive_threshold=args.adaptive_threshold, min_content_val=args.min_content_val,
                        min_scene_frames=args.min_scene_frames, min_seconds=args.min_seconds,
                        max_seconds=args.max_seconds, cut=args.cut, clips_dir=str(Path(clips).resolve()))


def _motion_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("motion")
    group.add_argument("--motion-samples", type=int, default=16, metavar="N", help="frames measured per clip (default 16)")
    for name, what in (("motion", "VMAF motion score"), ("flow", "optical flow, px/frame at a 256 px short side")):
        group.add_argument(f"--min-{name}", type=float, default=None, metavar="X", help=f"drop clips below this {what}")
        group.add_argument(f"--max-{name}", type=float, default=None, metavar="X", help=f"drop clips above this {what}")


def _motion_config(args, output: Path):
    from training.curation.motion import MotionConfig

    return MotionConfig(samples=args.motion_samples, min_motion=args.min_motion, max_motion=args.max_motion,
                        min_flow=args.min_flow, max_flow=args.max_flow)


def _ocr_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("ocr")
    group.add_argument("--ocr-frames", type=int, default=3, metavar="N", help="frames searched for text per clip (default 3)")
    group.add_argument("--max-ocr-area", type=float, default=None, metavar="F",
                       help="drop clips whose text boxes cover more than this fraction of a frame (e.g. 0.02)")


def _ocr_config(args, output: Path):
    from training.curation.ocr import OcrConfig

    return OcrConfig(frames=args.ocr_frames, max_area=args.max_ocr_area)


def _aesthetic_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("aesthetic")
    group.add_argument("--aesthetic-weights", default=None, metavar="DIR",
                       help="folder with clip/ (a transformers CLIP model) and head.safetensors (the predictor's MLP); "
                       "without it the stage is skipped")
    group.add_argument("--aesthetic-frames", type=int, default=3, metavar="N", help="frames scored per clip (default 3)")
    group.add_argument("--min-aesthetic", type=float, default=None, metavar="X", help="drop clips scoring below this")


def _aesthetic_config(args, output: Path):
    from training.curation.aesthetic import AestheticConfig, check_weights

    weights = str(Path(args.aesthetic_weights).resolve()) if args.aesthetic_weights else ""
    if weights:
        check_weights(weights)
    return AestheticConfig(weights_dir=weights, frames=args.aesthetic_frames, min_score=args.min_aesthetic)


def _caption_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("caption (an OpenAI-compatible vision model; the key only from OPENAI_API_KEY)")
    group.add_argument("--caption-base-url", default=None, metavar="URL",
                       help="server, e.g. http://127.0.0.1:8000/v1 (default: OPENAI_BASE_URL, else the OpenAI API when OPENAI_API_KEY is set)")
    group.add_argument("--caption-model", default=None, metavar="NAME", help="vision model name (default gpt-4o)")
    group.add_argument("--caption-instruction", default=None, metavar="TEXT", help="what the model is asked (default: a video-caption instruction)")
    group.add_argument("--caption-instruction-file", default=None, metavar="FILE", help="read the instruction from a text file")
    group.add_argument("--caption-frames", type=int, default=3, metavar="N", help="frames sent per clip (default 3)")
    group.add_argument("--caption-frame-size", type=int, default=512, metavar="PX", help="longest side of each frame sent (default 512)")
    group.add_argument("--caption-max-tokens", type=int, default=300, metavar="N", help="longest answer (default 300)")
    group.add_argument("--caption-timeout", type=float, default=60.0, metavar="S", help="seconds to wait for one answer (default 60)")
    group.add_argument("--caption-retries", type=int, default=3, metavar="N", help="retries on 429 / timeout / connection errors (default 3)")
    group.add_argument("--caption-backoff", type=float, default=1.0, metavar="S", help="first retry delay, doubled each time (default 1)")
    group.add_argument("--caption-rate-limit", type=float, default=0.0, metavar="R", help="requests per second over all workers (default 0: no limit)")
    group.add_argument("--caption-overwrite", action="store_true", help="caption rows that already have text too")


def _caption_config(args, output: Path):
    from opensora.errors import UserError
    from opensora.refine.settings import DEFAULT_MODEL
    from training.curation.caption import DEFAULT_INSTRUCTION, CaptionConfig

    instruction = args.caption_instruction or DEFAULT_INSTRUCTION
    if args.caption_instruction_file:
        try:
            instruction = Path(args.caption_instruction_file).read_text(encoding="utf-8").strip()
        except OSError as e:
            raise UserError(f"cannot read --caption-instruction-file {args.caption_instruction_file}: {e}") from None
    return CaptionConfig(
        instruction=instruction, model=args.caption_model or DEFAULT_MODEL, frames=args.caption_frames,
        frame_size=args.caption_frame_size, max_tokens=args.caption_max_tokens, overwrite=args.caption_overwrite,
        base_url=args.caption_base_url or "", timeout_s=args.caption_timeout, retries=args.caption_retries,
        backoff_s=args.caption_backoff, rate_limit=args.caption_rate_limit, workers=args.workers,
    )


def _filter_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("filter")
    group.add_argument("--where", default="", metavar="EXPR",
                       help="keep rows where this holds, e.g. \"motion > 2 and ocr_area < 0.02\" (columns, numbers, "
                       "'strings', comparisons, and/or/not, + - * /)")
    group.add_argument("--val-fraction", type=float, default=0.0, metavar="F",
                       help="share of source videos held out for validation (all scenes of a video on one side); "
                       "writes OUTPUT.train.csv and OUTPUT.val.csv (default 0)")
    group.add_argument("--seed", type=int, default=0, help="seeds the choice of validation videos (default 0)")
    group.add_argument("--buckets", default=None, metavar="NAME|FILE",
                       help="report clips per bucket of this table: presets/buckets-NAME.toml by NAME, or a TOML path")


def _filter_config(args, output: Path):
    from training.curation.filter import FilterConfig

    return FilterConfig(where=args.where, val_fraction=args.val_fraction, seed=args.seed, buckets=args.buckets or "")


def _probe_config(args, output: Path):
    from training.curation.probe import ProbeConfig

    return ProbeConfig()


@dataclass(frozen=True)
class _StageFlags:
    add: Callable[[argparse.ArgumentParser], None] | None
    config: Callable[[argparse.Namespace, Path], object]


FLAGS = {
    "probe": _StageFlags(None, _probe_config),
    "scenes": _StageFlags(_scenes_arguments, _scenes_config),
    "motion": _StageFlags(_motion_arguments, _motion_config),
    "ocr": _StageFlags(_ocr_arguments, _ocr_config),
    "aesthetic": _StageFlags(_aesthetic_arguments, _aesthetic_config),
    "caption": _StageFlags(_caption_arguments, _caption_config),
    "filter": _StageFlags(_filter_arguments, _filter_config),
}


def _print_summaries(summaries, output: Path) -> None:
    # Each stage already logged its summary line as it finished; stdout gets the whole as JSON.
    print(json.dumps({"output": str(output), "stages": [s.to_dict() for s in summaries]}))


# --------------------------------------------------------------------------- prepare (the chain)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, metavar="DIR|CSV", help="folder of videos (searched recursively) or a CSV with a path column")
    parser.add_argument("--output", required=True, metavar="CSV",
                        help="the training CSV (path,text,num_frames,height,width,fps,aspect_ratio,motion_score,...); "
                        "intermediate stage CSVs go to OUTPUT.stages/")
    parser.add_argument("--stages", default=STAGES, metavar="LIST", help=f"comma-separated, in this order (default {STAGES})")
    _common_arguments(parser)
    for flags in FLAGS.values():
        if flags.add:
            flags.add(parser)


def run(args: argparse.Namespace) -> int:
    from training.curation.pipeline import ChainConfig, parse_stages, run_pipeline

    output = Path(args.output).resolve()
    stages = parse_stages(args.stages)
    config = ChainConfig(**{name: FLAGS[name].config(args, output) for name in FLAGS})
    summaries = run_pipeline(args.input, output, stages, config, workers=args.workers, engine=args.engine,
                             ray_address=args.ray_address, overwrite=args.overwrite, progress=not args.no_progress)
    _print_summaries(summaries, output)
    return 0


# --------------------------------------------------------------------------- prepare-STAGE


class StageCommand:
    """`prepare-NAME IN OUT`: one stage, the same flags as in the chain."""

    def __init__(self, name: str):
        self.name = name

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        source = "folder of videos or CSV" if self.name == "probe" else "CSV from an earlier stage"
        parser.add_argument("input", metavar="IN", help=source)
        parser.add_argument("output", metavar="OUT", help="CSV to write (resumed when it holds a partial run)")
        if self.name != "filter":
            _common_arguments(parser)
        else:
            parser.add_argument("--no-progress", action="store_true", help="draw no progress bar on stderr")
        if FLAGS[self.name].add:
            FLAGS[self.name].add(parser)

    def run(self, args: argparse.Namespace) -> int:
        output = Path(args.output).resolve()
        config = FLAGS[self.name].config(args, output)
        if self.name == "filter":
            from training.curation.filter import run_filter

            summary = run_filter(config, args.input, output, progress=not args.no_progress)
        else:
            import importlib

            from training.curation.runner import run_stage

            module = importlib.import_module(f"training.curation.{self.name}")
            skip = module.skip_reason(config) if hasattr(module, "skip_reason") else None
            summary = run_stage(module.STAGE, config, args.input, output, workers=args.workers, engine=args.engine,
                                ray_address=args.ray_address, overwrite=args.overwrite, skip=skip,
                                progress=not args.no_progress)
        _print_summaries([summary], output)
        return 0


PROBE, SCENES, MOTION, OCR, AESTHETIC, CAPTION, FILTER = (StageCommand(name) for name in FLAGS)
