"""Stage motion: the VMAF motion score (what Open-Sora 2.0 conditions on) and optical flow.

VMAF's motion feature, from its definition: blur the luma (Y, 8-bit) of every frame with VMAF's
5-tap Gaussian, take the mean absolute difference between consecutive blurred frames, and give
frame i the smaller of its difference to the previous and to the next frame (so one flash frame
does not count as motion). ``motion`` is the mean of that value at up to ``samples`` evenly spaced
frames of the clip (each needs frames i-1, i, i+1); ``motion_score`` holds the same number, as the
column the trainer turns into "N motion score." in captions.

``flow`` is the mean DIS optical flow magnitude (OpenCV) between frames i-1 and i at the same
positions, in pixels per frame measured at a 256-pixel short side (frames are shrunk to it, never
enlarged, and the magnitude is scaled to it), so it compares across resolutions.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from opensora.errors import UserError
from training.curation.frames import DecodeError, decode_frames, row_frame_count
from training.curation.stage import ItemResult, Stage
from training.curation.table import Row, format_number

# VMAF's blur (libvmaf motion, FFmpeg vf_vmafmotion): a 5-tap Gaussian, applied along y then x.
VMAF_FILTER = np.array([0.054488685, 0.244201342, 0.402619947, 0.244201342, 0.054488685], np.float32)
FLOW_SHORT_SIDE = 256
# DIS rather than Farnebäck: on low-contrast luma (a tinted picture) Farnebäck reads a 4 px pan
# as about 2.7 px, DIS as 4.0.
DIS_PRESET = cv2.DISOPTICAL_FLOW_PRESET_MEDIUM


@dataclass(frozen=True)
class MotionConfig:
    samples: int = 16
    min_motion: float | None = None
    max_motion: float | None = None
    min_flow: float | None = None
    max_flow: float | None = None

    def __post_init__(self) -> None:
        if self.samples < 1:
            raise UserError(f"--motion-samples is {self.samples}; must be >= 1")
        for low, high, name in ((self.min_motion, self.max_motion, "motion"), (self.min_flow, self.max_flow, "flow")):
            if low is not None and high is not None and low > high:
                raise UserError(f"--min-{name} {low} is above --max-{name} {high}; the range would keep nothing")


def vmaf_blur(y: np.ndarray) -> np.ndarray:
    return cv2.sepFilter2D(y.astype(np.float32), -1, VMAF_FILTER, VMAF_FILTER, borderType=cv2.BORDER_REFLECT_101)


def mean_abs_difference(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(np.abs(a - b)))


def vmaf_motion_at(blurred: dict[int, np.ndarray], i: int) -> float:
    """VMAF motion2 of frame i: min(SAD(i, i-1), SAD(i+1, i)); the last frame has only the first."""
    previous = mean_abs_difference(blurred[i], blurred[i - 1])
    if i + 1 not in blurred:
        return previous
    return min(previous, mean_abs_difference(blurred[i + 1], blurred[i]))


def flow_magnitude(a: np.ndarray, b: np.ndarray) -> float:
    """Mean DIS flow length from a to b (uint8 luma), in pixels at FLOW_SHORT_SIDE."""
    short = min(a.shape)
    scale = min(1.0, FLOW_SHORT_SIDE / short)
    if scale < 1.0:
        size = (round(a.shape[1] * scale), round(a.shape[0] * scale))
        a, b = (cv2.resize(x, size, interpolation=cv2.INTER_AREA) for x in (a, b))
    flow = cv2.DISOpticalFlow_create(DIS_PRESET).calc(a, b, None)
    return float(np.mean(np.linalg.norm(flow, axis=2))) * FLOW_SHORT_SIDE / (short * scale)


def sample_positions(count: int, samples: int) -> list[int]:
    """Frames i with both neighbours inside the clip, evenly spaced; [1] for a 2-frame clip."""
    if count < 2:
        return []
    if count == 2:
        return [1]
    k = min(samples, count - 2)
    return sorted({1 + round(j * (count - 3) / max(k - 1, 1)) for j in range(k)})


def measure(row: Row, samples: int) -> tuple[float, float]:
    """(VMAF motion, flow) of the row's frames; (0, 0) for a single frame."""
    positions = sample_positions(row_frame_count(row), samples)
    needed = {j for i in positions for j in (i - 1, i, i + 1)}
    lumas = decode_frames(row, needed, kind="luma")
    positions = [i for i in positions if i - 1 in lumas and i in lumas]  # a short file loses its tail
    if not positions:
        return 0.0, 0.0
    blurred = {i: vmaf_blur(y) for i, y in lumas.items()}
    motion = float(np.mean([vmaf_motion_at(blurred, i) for i in positions]))
    flow = float(np.mean([flow_magnitude(lumas[i - 1], lumas[i]) for i in positions]))
    return motion, flow


def motion_row(row: Row, config: MotionConfig) -> ItemResult:
    try:
        motion, flow = measure(row, config.samples)
    except DecodeError as e:
        return ItemResult.drop("unreadable", str(e))
    except cv2.error as e:  # e.g. frames smaller than the flow's patches
        return ItemResult.drop("motion failed", f"{row['path']}: {e}")
    out = dict(row, motion=format_number(motion), motion_score=format_number(motion), flow=format_number(flow))
    for value, low, high, name in (
        (motion, config.min_motion, config.max_motion, "motion"),
        (flow, config.min_flow, config.max_flow, "flow"),
    ):
        if (low is not None and value < low) or (high is not None and value > high):
            return ItemResult.drop(f"{name} out of range", f"{row['path']}: {name} {value:.3f} outside "
                                   f"[{'-inf' if low is None else low}, {'inf' if high is None else high}]")
    return ItemResult(rows=[out])


STAGE = Stage(
    name="motion",
    columns=("motion_score", "motion", "flow"),
    process=motion_row,
    needs=("path", "num_frames"),
    unit="clip",
)
