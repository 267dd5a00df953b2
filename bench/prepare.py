"""Data curation speed on this CPU: clips (or files) per second per stage, with 1 and 2 workers;
prints one JSON object.

    python bench/prepare.py [--videos 6] [--height 240] [--width 426] [--seconds 6] [--workers 1,2]

Writes synthetic source videos (hard-cut scenes of a panning texture, 24 fps), then runs the real
chain (`training.curation.pipeline.run_pipeline`: probe, scenes with --cut, motion, ocr, filter)
once per worker count on a fresh output. A stage's rate is its input rows over its wall time, pool
start included (probe and scenes read files; later stages read clips). Caption (needs a server)
and aesthetic (needs weights) are not measured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # runnable from a checkout

STAGES = ["probe", "scenes", "motion", "ocr", "filter"]
FPS = 24
SCENES_PER_VIDEO = 3


def write_sources(folder: Path, count: int, height: int, width: int, seconds: float) -> None:
    """Each video: SCENES_PER_VIDEO scenes of a differently tinted texture panning at 1-4 px/frame."""
    import numpy as np

    from opensora.io.video import write_video

    rng = np.random.default_rng(0)
    frames_per_scene = round(seconds * FPS / SCENES_PER_VIDEO)
    for index in range(count):
        scenes = []
        for scene in range(SCENES_PER_VIDEO):
            speed = 1 + (index + scene) % 4
            base = rng.random((height // 8 + 1, (width + speed * frames_per_scene) // 8 + 1, 3), np.float32)
            texture = np.kron(base, np.ones((8, 8, 1), np.float32))  # 8 px blocks
            tint = rng.uniform(0.3, 1.0, 3).astype(np.float32)
            pattern = (texture * tint * 255).astype(np.uint8)
            scenes += [pattern[:height, t * speed: t * speed + width] for t in range(frames_per_scene)]
        write_video(folder / f"source{index:02d}.mp4", np.stack(scenes), FPS)


def run_once(raw: Path, out: Path, workers: int) -> dict:
    from training.curation.pipeline import ChainConfig, run_pipeline
    from training.curation.scenes import ScenesConfig

    config = ChainConfig(scenes=ScenesConfig(clips_dir=str(out.parent / "clips")))
    started = time.perf_counter()
    summaries = run_pipeline(raw, out, STAGES, config, workers=workers, progress=False)
    total = time.perf_counter() - started
    stages = {
        s.stage: {"rows_in": s.rows_in, "seconds": round(s.seconds, 3),
                  "per_s": round(s.rows_in / s.seconds, 2) if s.seconds else None}
        for s in summaries
    }
    return {"total_seconds": round(total, 2), "clips": summaries[1].rows_out, "stages": stages}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=6, help="source videos (default 6)")
    parser.add_argument("--height", type=int, default=240, help="source height (default 240)")
    parser.add_argument("--width", type=int, default=426, help="source width (default 426)")
    parser.add_argument("--seconds", type=float, default=6.0, help=f"source length, {SCENES_PER_VIDEO} scenes (default 6)")
    parser.add_argument("--workers", default="1,2", help="worker counts to compare (default 1,2)")
    args = parser.parse_args()
    counts = [int(w) for w in args.workers.split(",")]

    import logging

    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="prepare-bench-") as tmp:
        raw = Path(tmp) / "raw"
        raw.mkdir()
        write_sources(raw, args.videos, args.height, args.width, args.seconds)
        runs = {f"workers_{w}": run_once(raw, Path(tmp) / f"w{w}" / "meta.csv", w) for w in counts}

    result = {
        "bench": "prepare",
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "sources": {"videos": args.videos, "size": f"{args.height}x{args.width}", "fps": FPS,
                    "seconds": args.seconds, "scenes_per_video": SCENES_PER_VIDEO},
        "per_s": {stage: {key: run["stages"][stage]["per_s"] for key, run in runs.items()} for stage in STAGES},
        "runs": runs,
    }
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
