"""Stage ocr: how much of the picture is text, with RapidOCR's text detector.

RapidOCR ships its ONNX models inside the package, so this runs offline. Only the detector runs
(recognising the words is not needed to measure them). For ``frames`` evenly spaced frames of a
clip, the detected text boxes are filled into a mask; ``ocr_area`` is the largest fraction of a
frame they cover, ``ocr_boxes`` the most boxes in one frame. Clips above ``max_area`` are dropped
(subtitles, watermarks, slides).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np

from opensora.errors import UserError
from training.curation.engines import worker_threads
from training.curation.frames import DecodeError, decode_frames, evenly_spaced, row_frame_count
from training.curation.stage import ItemResult, Stage
from training.curation.table import Row, format_number


@dataclass(frozen=True)
class OcrConfig:
    frames: int = 3
    max_area: float | None = None

    def __post_init__(self) -> None:
        if self.frames < 1:
            raise UserError(f"--ocr-frames is {self.frames}; must be >= 1")
        if self.max_area is not None and not 0 <= self.max_area <= 1:
            raise UserError(f"--max-ocr-area is {self.max_area}; must be a fraction in [0, 1]")


@functools.cache
def detector(threads: int):
    """One RapidOCR engine per worker process (loading it takes most of a second)."""
    from rapidocr import RapidOCR  # noqa: PLC0415 - only workers of this stage need it

    return RapidOCR(params={
        "Global.use_cls": False,
        "Global.use_rec": False,
        "Global.log_level": "error",
        # Shrink frames to a 960 px long side, never enlarge them: RapidOCR's default (a 736 px
        # *short* side) blows small frames up until noise and texture read as text.
        "Det.limit_type": "max",
        "Det.limit_side_len": 960,
        "EngineConfig.onnxruntime.intra_op_num_threads": threads or -1,
        "EngineConfig.onnxruntime.inter_op_num_threads": 1 if threads else -1,
    })


def text_boxes(rgb: np.ndarray) -> list[np.ndarray]:
    """Text boxes of one RGB frame, each a (4, 2) array of corner points in pixels."""
    result = detector(worker_threads())(np.ascontiguousarray(rgb[..., ::-1]))  # RapidOCR takes BGR arrays
    boxes = getattr(result, "boxes", None)
    return [] if boxes is None else [np.asarray(b, np.float32) for b in boxes]


def text_area(boxes: list[np.ndarray], height: int, width: int) -> float:
    """Fraction of the frame covered by the union of the boxes."""
    if not boxes:
        return 0.0
    mask = np.zeros((height, width), np.uint8)
    cv2.fillPoly(mask, [np.round(b).astype(np.int32) for b in boxes], 1)
    return float(mask.mean())


def ocr_row(row: Row, config: OcrConfig) -> ItemResult:
    try:
        frames = decode_frames(row, evenly_spaced(row_frame_count(row), config.frames))
    except DecodeError as e:
        return ItemResult.drop("unreadable", str(e))
    if not frames:
        return ItemResult.drop("unreadable", f"no frames decoded from {row['path']}")
    area, count = 0.0, 0
    for rgb in frames.values():
        boxes = text_boxes(rgb)
        area = max(area, text_area(boxes, *rgb.shape[:2]))
        count = max(count, len(boxes))
    if config.max_area is not None and area > config.max_area:
        return ItemResult.drop("too much text", f"{row['path']}: text covers {area:.3f} of a frame (max {config.max_area})")
    return ItemResult(rows=[dict(row, ocr_area=format_number(area), ocr_boxes=str(count))])


STAGE = Stage(name="ocr", columns=("ocr_area", "ocr_boxes"), process=ocr_row, unit="clip")
