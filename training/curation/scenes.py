"""Stage scenes: one row per scene of each video, found by PySceneDetect's AdaptiveDetector.

The official Open-Sora v1.3 tool used ``AdaptiveDetector(adaptive_threshold=2.0,
min_content_val=10)``; both are settings here. Scenes shorter than ``min_seconds`` are dropped,
longer than ``max_seconds`` split into equal parts no longer than it. With ``cut`` (default) each
scene is written as its own clip (``cut.py``) and the row points at it; without, the row keeps
the source path with ``start_frame``/``end_frame`` (the trainer reads whole files, so such a CSV
is for inspection or for cutting later).

Frame numbers are decode order, the same numbering every other stage reads by. PySceneDetect's
PyAV backend can stop one frame short of the end, so the last scene runs to the probed count.
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import av

from opensora.errors import UserError
from training.curation.cut import cut_clips
from training.curation.stage import ItemResult, Stage
from training.curation.table import Row, format_number, parse_int


@dataclass(frozen=True)
class ScenesConfig:
    adaptive_threshold: float = 2.0
    min_content_val: float = 10.0
    min_scene_frames: int = 15  # no cut within this many frames of the last one
    min_seconds: float = 1.0
    max_seconds: float = 0.0  # 0: never split
    cut: bool = True
    clips_dir: str = ""  # required when cut

    def __post_init__(self) -> None:
        if not self.adaptive_threshold > 0:
            raise UserError(f"--adaptive-threshold is {self.adaptive_threshold}; must be > 0 (official: 2.0)")
        if not self.min_content_val >= 0:
            raise UserError(f"--min-content-val is {self.min_content_val}; must be >= 0 (official: 10)")
        if self.min_scene_frames < 1:
            raise UserError(f"--min-scene-frames is {self.min_scene_frames}; must be >= 1")
        if self.min_seconds < 0:
            raise UserError(f"--min-seconds is {self.min_seconds}; must be >= 0")
        if self.max_seconds < 0 or (self.max_seconds and self.max_seconds < self.min_seconds):
            raise UserError(
                f"--max-seconds is {self.max_seconds}; must be 0 (no split) or >= --min-seconds ({self.min_seconds})"
            )
        if self.cut and not self.clips_dir:
            raise UserError("scenes --cut needs a clips folder (--clips-dir)")


def detect_cuts(path: Path, config: ScenesConfig) -> list[int]:
    """Frame numbers where a new scene starts (0 first)."""
    from scenedetect import AdaptiveDetector, SceneManager, open_video  # noqa: PLC0415 - heavy, workers only

    # Its import sets its logger to INFO, and it logs "Detecting scenes..." for every file.
    logging.getLogger("pyscenedetect").setLevel(logging.WARNING)

    # No decoder threads: with them PySceneDetect may drop the last frames, and its own docs warn
    # that silencing FFmpeg's log (which it otherwise turns on for the whole process) can deadlock.
    video = open_video(str(path), backend="pyav", suppress_output=True, threading_mode=None)
    manager = SceneManager()
    manager.add_detector(AdaptiveDetector(
        adaptive_threshold=config.adaptive_threshold,
        min_content_val=config.min_content_val,
        min_scene_len=config.min_scene_frames,
    ))
    manager.detect_scenes(video, show_progress=False)
    starts = [start.get_frames() for start, _ in manager.get_scene_list(start_in_scene=True)]
    return starts or [0]


def scene_ranges(starts: list[int], total: int, fps: float, config: ScenesConfig) -> tuple[list[tuple[int, int]], dict[str, int]]:
    """[start, end) ranges after the length rules, and counts of what the rules did."""
    bounds = [s for s in starts if 0 <= s < total] + [total]
    min_frames = math.ceil(config.min_seconds * fps - 1e-9)
    max_frames = int(config.max_seconds * fps + 1e-9) if config.max_seconds else 0
    ranges, counts = [], {}
    for start, end in zip(bounds, bounds[1:]):
        length = end - start
        if length < max(min_frames, 1):
            counts["short scenes dropped"] = counts.get("short scenes dropped", 0) + 1
            continue
        parts = math.ceil(length / max_frames) if max_frames else 1
        if parts > 1:
            counts["long scenes split"] = counts.get("long scenes split", 0) + 1
        edges = [start + round(j * length / parts) for j in range(parts + 1)]
        ranges += list(zip(edges, edges[1:]))
    return ranges, counts


def clip_path(clips_dir: str, source: str, index: int) -> Path:
    """clips_dir/<source stem>-<8 hex of the source path>-<scene>.mp4: unique across folders."""
    digest = hashlib.sha1(source.encode("utf-8")).hexdigest()[:8]
    return Path(clips_dir) / f"{Path(source).stem}-{digest}-{index:04d}.mp4"


def scenes_row(row: Row, config: ScenesConfig) -> ItemResult:
    if parse_int(row, "end_frame") is not None or (row.get("scene") or "").strip():
        return ItemResult(rows=[row])  # already a scene: rerunning on its own output changes nothing
    path = Path(row["path"])
    try:
        fps = float(row["fps"])
    except ValueError:
        return ItemResult.drop("no frame rate", f"{path}: fps is {row['fps']!r}; run probe first")
    total = parse_int(row, "num_frames") or 0
    try:
        starts = detect_cuts(path, config)
    except (av.FFmpegError, OSError, RuntimeError, ValueError) as e:
        return ItemResult.drop("unreadable", f"scene detection failed on {path}: {e}")
    ranges, counts = scene_ranges(starts, total, fps, config)
    counts["scenes found"] = len(starts)
    if not ranges:
        return ItemResult(rows=[], reason="no scene long enough",
                          detail=f"{path}: every scene is shorter than {config.min_seconds:g} s", counts=counts)
    source = row.get("source") or str(path)
    rows = []
    if config.cut:
        targets = [clip_path(config.clips_dir, source, i) for i in range(len(ranges))]
        try:
            clips = cut_clips(path, ranges, targets, rotation=parse_int(row, "rotation") or 0)
        except (av.FFmpegError, OSError, ValueError) as e:
            return ItemResult.drop("unreadable", f"cutting {path} failed: {e}")
        min_frames = max(math.ceil(config.min_seconds * fps - 1e-9), 1)
        for index, ((start, end), clip) in enumerate(zip(ranges, clips)):
            if clip.num_frames < min_frames:  # the file ended before its probed frame count
                counts["short scenes dropped"] = counts.get("short scenes dropped", 0) + 1
                continue
            rows.append(_scene_row(row, source, index, start, start + clip.num_frames, fps,
                                   path=str(clip.path), height=clip.height, width=clip.width))
    else:
        for index, (start, end) in enumerate(ranges):
            rows.append(_scene_row(row, source, index, start, end, fps, path=str(path),
                                   start_frame=start, end_frame=end))
    return ItemResult(rows=rows, counts=counts)


def _scene_row(row: Row, source: str, index: int, start: int, end: int, fps: float, path: str,
               height: int | None = None, width: int | None = None,
               start_frame: int | None = None, end_frame: int | None = None) -> Row:
    out = dict(row)
    out.update(
        path=path,
        source=source,
        scene=str(index),
        start_frame="" if start_frame is None else str(start_frame),
        end_frame="" if end_frame is None else str(end_frame),
        start_s=format_number(start / fps, 3),
        end_s=format_number(end / fps, 3),
        num_frames=str(end - start),
        duration_s=format_number((end - start) / fps, 3),
    )
    if height is not None and width is not None:
        out.update(height=str(height), width=str(width), aspect_ratio=format_number(height / width))
    return out


STAGE = Stage(
    name="scenes",
    columns=("source", "scene", "start_frame", "end_frame", "start_s", "end_s", "duration_s"),
    process=scenes_row,
    needs=("path", "num_frames", "fps"),
)
