"""Synthetic videos for the curation tests (known cuts, known motion, rendered text, broken
files), and the probe stage on them: what each file is, and bad files reported, never a crash.

The builders are imported by the other tests/test_curation_*.py files.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from opensora.io.video import write_video
from training.curation.probe import ProbeConfig, probe_row
from training.curation.runner import run_stage
from training.curation import probe
from training.curation.table import read_csv

FPS = 12
HEIGHT, WIDTH = 64, 96
# Tints of the scenes in a multi-scene video: far apart, so every join is a hard cut.
COLOURS = ((210, 40, 40), (40, 200, 60), (50, 60, 220), (230, 220, 60), (200, 60, 210))


def texture(colour: tuple[int, int, int], seed: int, width: int) -> np.ndarray:
    """A smooth random pattern (blobs a few pixels wide) tinted by ``colour``: uint8 (HEIGHT, width, 3)."""
    noise = np.random.default_rng(seed).random((HEIGHT, width)).astype(np.float32)
    blobs = cv2.GaussianBlur(noise, (0, 0), 2.5)
    blobs = (blobs - blobs.min()) / (blobs.max() - blobs.min())
    shade = 0.45 + 0.55 * blobs[..., None]
    return (shade * np.array(colour, np.float32)).clip(0, 255).astype(np.uint8)


def moving_scene(colour, num_frames: int, speed: float, seed: int) -> np.ndarray:
    """The camera pans right over a texture at ``speed`` pixels per frame (0: a still shot)."""
    pattern = texture(colour, seed, WIDTH + int(np.ceil(speed * num_frames)) + 1)
    return np.stack([pattern[:, round(t * speed): round(t * speed) + WIDTH] for t in range(num_frames)])


def write_scenes(path: Path, lengths: list[int], speeds: list[float] | None = None, seed: int = 0) -> list[int]:
    """A video of hard-cut scenes; returns the frame numbers where scenes 2, 3, ... start."""
    speeds = speeds or [1.0] * len(lengths)
    scenes = [moving_scene(COLOURS[i % len(COLOURS)], n, s, seed + i) for i, (n, s) in enumerate(zip(lengths, speeds))]
    write_video(path, np.concatenate(scenes), FPS)
    return list(np.cumsum(lengths)[:-1])


def text_frame(text: str | None, colour=(40, 90, 60), size=(HEIGHT, WIDTH)) -> np.ndarray:
    image = Image.new("RGB", (size[1], size[0]), colour)
    if text:
        ImageDraw.Draw(image).text((6, size[0] // 2 - 10), text, fill=(255, 255, 255), font=ImageFont.load_default(size=18))
    return np.asarray(image)


def write_text_video(path: Path, text: str | None, num_frames: int = 12) -> None:
    write_video(path, np.stack([text_frame(text)] * num_frames), FPS)


def write_broken_files(folder: Path) -> tuple[Path, Path]:
    """A 0-byte .mp4 and one of random bytes."""
    empty, corrupt = folder / "empty.mp4", folder / "corrupt.mp4"
    empty.write_bytes(b"")
    corrupt.write_bytes(np.random.default_rng(0).bytes(4096))
    return empty, corrupt


def write_rotated_video(path: Path, rotation: int, num_frames: int = 6) -> None:
    """A clip whose container says "display rotated by ``rotation`` degrees" (phone footage)."""
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(FPS))
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.set_display_rotation(rotation)
        for rgb in moving_scene(COLOURS[0], num_frames, 1.0, 0):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode())


# --------------------------------------------------------------------------- probe


def test_probe_reads_fps_frames_size_duration_codec(tmp_path):
    write_scenes(tmp_path / "clip.mp4", [18, 12])
    result = probe_row({"path": str(tmp_path / "clip.mp4")}, ProbeConfig())
    assert result.reason is None
    row = result.rows[0]
    assert (row["num_frames"], row["height"], row["width"], row["fps"]) == ("30", str(HEIGHT), str(WIDTH), "12")
    assert float(row["duration_s"]) == 2.5
    assert row["codec"] == "h264" and row["rotation"] == "0"
    assert row["source"] == row["path"] == str(tmp_path / "clip.mp4")
    assert float(row["aspect_ratio"]) == round(HEIGHT / WIDTH, 4)


def test_probe_reports_the_display_rotation(tmp_path):
    write_rotated_video(tmp_path / "phone.mp4", 90)
    row = probe_row({"path": str(tmp_path / "phone.mp4")}, ProbeConfig()).rows[0]
    assert int(row["rotation"]) in (90, 270)  # the sign convention of the display matrix differs by tool
    assert (row["height"], row["width"]) == (str(HEIGHT), str(WIDTH))  # stored size, as the trainer decodes it


def test_probe_skips_empty_and_corrupt_files_and_keeps_the_rest(tmp_path, caplog):
    raw = tmp_path / "raw"
    raw.mkdir()
    write_scenes(raw / "good.mp4", [15])
    (raw / "notes.txt").write_text("not a video")  # not picked up: only video extensions are
    empty, corrupt = write_broken_files(raw)
    summary = run_stage(probe.STAGE, ProbeConfig(), raw, tmp_path / "probe.csv", progress=False)
    assert summary.dropped == {"empty file": 1, "unreadable": 1}
    assert (summary.rows_in, summary.rows_out, summary.kept) == (3, 1, 1)
    _, rows = read_csv(tmp_path / "probe.csv")
    assert [Path(r["path"]).name for r in rows] == ["good.mp4"]
    logged = caplog.text
    assert f"file is empty (0 bytes): {empty}" in logged and str(corrupt) in logged
