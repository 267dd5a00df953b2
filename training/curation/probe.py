"""Stage probe: what each file is (fps, frames, size, duration, codec, rotation), with PyAV.

A file that is empty, unreadable, has no video stream or no decodable first frame is dropped
with the reason; nothing here raises for a bad file. ``source`` (the original video) is set
here and carried by every later row: the train/val split groups by it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av

from training.curation.stage import ItemResult, Stage
from training.curation.table import Row, format_number


@dataclass(frozen=True)
class ProbeConfig:
    pass  # nothing to set: a probe reads what is there


def probe_row(row: Row, config: ProbeConfig) -> ItemResult:
    path = Path(row["path"])
    if not path.is_file():
        return ItemResult.drop("missing file", f"file not found: {path}")
    if path.stat().st_size == 0:
        return ItemResult.drop("empty file", f"file is empty (0 bytes): {path}")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                return ItemResult.drop("no video stream", f"file has no video stream: {path}")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            first = next(container.decode(stream), None)
            if not rate or rate <= 0 or first is None:
                return ItemResult.drop("unreadable", f"no decodable frames or frame rate: {path}")
            fps = float(rate)
            num_frames = stream.frames or _count_frames(path)
            codec = stream.codec_context.name
            rotation = int(first.rotation or 0) % 360
            height, width = stream.height, stream.width
    except (av.FFmpegError, OSError, StopIteration) as e:
        return ItemResult.drop("unreadable", f"cannot read video {path}: {e}")
    out = dict(row)
    out.update(
        path=str(path),
        text=row.get("text", ""),
        source=row.get("source") or str(path),
        num_frames=str(num_frames),
        height=str(height),
        width=str(width),
        fps=format_number(fps),
        aspect_ratio=format_number(height / width),
        duration_s=format_number(num_frames / fps, 3),
        codec=codec,
        rotation=str(rotation),
    )
    return ItemResult(rows=[out])


def _count_frames(path: Path) -> int:
    """For containers without a frame count (webm, mkv): decode and count."""
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(container.streams.video[0]))


STAGE = Stage(
    name="probe",
    columns=("text", "num_frames", "height", "width", "fps", "aspect_ratio", "source", "duration_s", "codec", "rotation"),
    process=probe_row,
)
