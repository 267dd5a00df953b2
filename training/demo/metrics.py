"""Measure a shapes-world video from its pixels: background, object colour, shape and motion.

Used by `python -m training.demo.evaluation` (held-out accuracy of the demo model) and its tests; the
same measurements on rendered ground-truth clips must be perfect.
"""

from dataclasses import asdict, dataclass

import numpy as np

from training.demo.shapes_world import BACKGROUNDS, COLOURS

FOREGROUND_DISTANCE = 60  # max |channel difference| from the background that counts as object
STILL_FRACTION = 0.12  # centroid travel below this share of the frame = standing still (moving >= 1/3)
# Fill ratio of the bounding box: square 1.0, circle pi/4 = 0.785, triangle 0.5.
SHAPE_FILL = {"square": 1.0, "circle": np.pi / 4, "triangle": 0.5}
STABLE_AREA_CV = 0.2  # area std / mean over frames below this: no flicker


@dataclass
class VideoMeasurement:
    background: str
    colour: str
    shape: str
    motion: str
    fill_ratio: float
    displacement: tuple[float, float]  # centroid (dx, dy) first -> last frames, in frame fractions
    area_cv: float
    object_found: bool

    @property
    def stable(self) -> bool:
        return self.object_found and self.area_cv < STABLE_AREA_CV

    def to_dict(self) -> dict:
        return {**asdict(self), "stable": self.stable}


def _nearest(value: np.ndarray, palette: dict[str, tuple[int, int, int]]) -> str:
    return min(palette, key=lambda name: float(np.sum((value - np.array(palette[name])) ** 2)))


def measure(frames: np.ndarray) -> VideoMeasurement:
    """frames: uint8 (T, H, W, 3)."""
    frames = frames.astype(np.int32)
    t, h, w, _ = frames.shape
    border = np.concatenate([frames[:, 0], frames[:, -1], frames[:, :, 0], frames[:, :, -1]], axis=1).reshape(-1, 3)
    background = _nearest(np.median(border, axis=0), BACKGROUNDS)
    distance = np.abs(frames - np.array(BACKGROUNDS[background])).max(axis=-1)
    masks = distance > FOREGROUND_DISTANCE  # (T, H, W)
    areas = masks.reshape(t, -1).sum(axis=1)
    if (areas == 0).any():
        return VideoMeasurement(background, "none", "none", "none", 0.0, (0.0, 0.0), 1.0, False)

    colour = _nearest(np.median(frames[masks], axis=0), COLOURS)
    fills, centroids = [], []
    for mask in masks:
        ys, xs = np.nonzero(mask)
        box = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
        fills.append(len(ys) / box)
        centroids.append((xs.mean() / w, ys.mean() / h))
    fill = float(np.median(fills))
    shape = min(SHAPE_FILL, key=lambda name: abs(SHAPE_FILL[name] - fill))
    centroids = np.array(centroids)
    edge = max(1, t // 8)  # average a few frames at each end against jitter
    dx, dy = centroids[-edge:].mean(axis=0) - centroids[:edge].mean(axis=0)
    if max(abs(dx), abs(dy)) < STILL_FRACTION:
        motion = "still"
    elif abs(dx) >= abs(dy):
        motion = "right" if dx > 0 else "left"
    else:
        motion = "down" if dy > 0 else "up"
    cv = float(areas.std() / areas.mean())
    return VideoMeasurement(background, colour, shape, motion, fill, (float(dx), float(dy)), cv, True)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio of two uint8 images, dB."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))
