"""Decoding the frames a stage looks at: a few evenly spaced ones, or consecutive triplets, of the
frame range a row stands for, in one sequential PyAV pass over the file."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import av
import numpy as np

from training.curation.table import Row, frame_range, parse_int

# 8-bit formats whose first plane is the luma itself (VMAF's input); others are converted.
_LUMA_PLANE_FORMATS = {"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "nv12", "nv21"}


class DecodeError(Exception):
    """The file cannot be decoded (message names it)."""


def row_frame_count(row: Row) -> int:
    """Frames of the row's range: end - start for an uncut scene, else num_frames."""
    start, end = frame_range(row)
    if end is not None:
        return max(end - start, 0)
    return parse_int(row, "num_frames") or 0


def evenly_spaced(count: int, k: int) -> list[int]:
    """k indices in [0, count): the centres of k equal parts (no black first frame of a fade)."""
    if count <= 0 or k <= 0:
        return []
    k = min(k, count)
    return sorted({min(int((i + 0.5) * count / k), count - 1) for i in range(k)})


def luma(frame: av.VideoFrame) -> np.ndarray:
    """The Y plane as uint8 (H, W), without a range conversion."""
    if frame.format.name in _LUMA_PLANE_FORMATS:
        plane = frame.planes[0]
        data = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)
        return data[:, : plane.width].copy()
    return frame.to_ndarray(format="gray")


def decode_frames(row: Row, indices: Iterable[int], kind: str = "rgb") -> dict[int, np.ndarray]:
    """Frames at ``indices`` (relative to the row's start frame): RGB (H, W, 3) or luma (H, W).

    Indices past the end of the file are missing from the result (a probe's count can be high)."""
    wanted = sorted(set(indices))
    start, _ = frame_range(row)
    path = Path(row["path"])
    frames: dict[int, np.ndarray] = {}
    if not wanted:
        return frames
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            last = start + wanted[-1]
            targets = {start + i for i in wanted}
            for number, frame in enumerate(container.decode(stream)):
                if number in targets:
                    frames[number - start] = luma(frame) if kind == "luma" else frame.to_ndarray(format="rgb24")
                if number >= last:
                    break
    except (av.FFmpegError, OSError, IndexError) as e:
        raise DecodeError(f"cannot decode {path}: {e}") from e
    return frames
