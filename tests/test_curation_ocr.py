"""Stage ocr: RapidOCR (its bundled ONNX models, offline) finds text drawn with PIL, where it was
drawn, finds none in a textless frame or a textured one, and the area filter drops the text clip."""

from __future__ import annotations

import numpy as np

from test_curation_media import HEIGHT, WIDTH, moving_scene, text_frame, write_text_video
from training.curation import ocr
from training.curation.ocr import OcrConfig, text_area, text_boxes
from training.curation.runner import run_stage
from training.curation.table import read_csv


def test_text_is_found_where_it_was_drawn_and_not_in_a_textless_frame():
    with_text = text_frame("SALE 50%")
    boxes = text_boxes(with_text)
    assert len(boxes) == 1
    drawn = np.argwhere((with_text > 200).all(axis=2))  # the white glyph pixels (row, col)
    (x0, y0), (x1, y1) = boxes[0].min(axis=0), boxes[0].max(axis=0)
    assert x0 <= drawn[:, 1].min() + 2 and drawn[:, 1].max() - 2 <= x1  # the box covers the glyphs
    assert y0 <= drawn[:, 0].min() + 2 and drawn[:, 0].max() - 2 <= y1
    assert 0.1 < text_area(boxes, HEIGHT, WIDTH) < 0.5
    assert text_boxes(text_frame(None)) == []
    assert text_boxes(moving_scene((200, 200, 200), 1, 0, seed=4)[0]) == []  # texture is not text


def test_ocr_stage_writes_the_text_area_and_drops_clips_above_the_limit(tmp_path):
    write_text_video(tmp_path / "subtitled.mp4", "HELLO 42")
    write_text_video(tmp_path / "plain.mp4", None)
    listing = tmp_path / "clips.csv"
    listing.write_text(f"path,text,num_frames\n{tmp_path / 'subtitled.mp4'},,12\n{tmp_path / 'plain.mp4'},,12\n")

    run_stage(ocr.STAGE, OcrConfig(frames=2), listing, tmp_path / "all.csv", progress=False)
    rows = {r["path"].rsplit("/", 1)[1]: r for r in read_csv(tmp_path / "all.csv")[1]}
    assert float(rows["subtitled.mp4"]["ocr_area"]) > 0.1 and rows["subtitled.mp4"]["ocr_boxes"] == "1"
    assert (rows["plain.mp4"]["ocr_area"], rows["plain.mp4"]["ocr_boxes"]) == ("0", "0")

    summary = run_stage(ocr.STAGE, OcrConfig(frames=2, max_area=0.02), listing, tmp_path / "kept.csv", progress=False)
    assert [r["path"].rsplit("/", 1)[1] for r in read_csv(tmp_path / "kept.csv")[1]] == ["plain.mp4"]
    assert summary.dropped == {"too much text": 1}
