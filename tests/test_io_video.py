"""opensora.io.video: H.264 writing, probing, strided reading, clear errors for bad files."""

import os

import av
import numpy as np
import pytest
import torch

from opensora.errors import UserError
from opensora.io.video import (
    VideoInfo,
    is_image_path,
    is_video_path,
    probe_video,
    read_video,
    write_video,
)


def gradient_video(num_frames: int, height: int, width: int) -> np.ndarray:
    """A smooth colour gradient that drifts over time: easy for H.264, so errors stay small."""
    y = np.linspace(0, 1, height)[:, None]
    x = np.linspace(0, 1, width)[None, :]
    frames = []
    for t in range(num_frames):
        phase = t / max(1, num_frames)
        r = 40 + 170 * x * np.ones_like(y)
        g = 40 + 170 * y * np.ones_like(x)
        b = 60 + 120 * (0.5 + 0.5 * np.sin(2 * np.pi * (x + y + phase) / 2))
        frames.append(np.stack([r, g, b], axis=-1))
    return np.clip(np.round(np.stack(frames)), 0, 255).astype(np.uint8)


def no_temp_files(directory) -> bool:
    return not any(".tmp-" in name for name in os.listdir(directory))


def test_written_mp4_is_browser_playable_h264(tmp_path):
    path = tmp_path / "clip.mp4"
    frames = gradient_video(12, 48, 64)
    write_video(path, frames, fps=24)

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert stream.codec_context.pix_fmt == "yuv420p"
        assert float(stream.average_rate) == pytest.approx(24)
        decoded = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(stream)])
    assert decoded.shape == (12, 48, 64, 3)
    mean_abs_error = np.abs(decoded.astype(np.float32) - frames.astype(np.float32)).mean()
    assert mean_abs_error < 6, mean_abs_error
    # +faststart puts the index (moov) before the media data (mdat).
    head = path.read_bytes()
    assert head.find(b"moov") < head.find(b"mdat")
    assert no_temp_files(tmp_path)


def test_odd_sizes_are_cropped_to_even(tmp_path):
    path = tmp_path / "odd.mp4"
    frames = gradient_video(3, 33, 47)
    write_video(path, frames, fps=8)
    info = probe_video(path)
    assert info == VideoInfo(num_frames=3, height=32, width=46, fps=8.0)
    decoded, _ = read_video(path)
    # Cropping (not resizing) keeps the remaining pixels in place.
    assert np.abs(decoded.astype(np.float32) - frames[:, :32, :46].astype(np.float32)).mean() < 6


def test_tensor_input_in_minus_one_to_one(tmp_path):
    path = tmp_path / "tensor.mp4"
    frames = gradient_video(5, 32, 32)
    tensor = torch.from_numpy(frames).permute(3, 0, 1, 2).float() / 255 * 2 - 1  # (3, T, H, W)
    tensor[:, :, 0, 0] = 5.0  # out of range: clamped, not wrapped
    write_video(path, tensor, fps=12.5)
    decoded, fps = read_video(path)
    assert decoded.shape == (5, 32, 32, 3)
    assert fps == pytest.approx(12.5)
    error = decoded[:, 4:, 4:].astype(np.float32) - frames[:, 4:, 4:].astype(np.float32)
    assert np.abs(error).mean() < 6


def test_overwrite_is_atomic_and_leaves_no_temp(tmp_path):
    path = tmp_path / "same.mp4"
    write_video(path, gradient_video(2, 16, 16), fps=24)
    write_video(path, gradient_video(4, 16, 16), fps=24)
    assert probe_video(path).num_frames == 4
    assert os.listdir(tmp_path) == ["same.mp4"]


@pytest.mark.parametrize(
    "frames, fps, fragment",
    [
        (np.zeros((0, 16, 16, 3), np.uint8), 24, "0 frames"),
        (np.zeros((2, 16, 16), np.uint8), 24, "(2, 16, 16)"),
        (np.zeros((2, 16, 16, 4), np.uint8), 24, "(2, 16, 16, 4)"),
        (np.zeros((2, 16, 16, 3), np.float32), 24, "float32"),
        (torch.zeros(2, 3, 16, 16), 24, "(2, 3, 16, 16)"),
        (torch.zeros(3, 2, 16, 16, dtype=torch.uint8), 24, "torch.uint8"),
        (np.zeros((2, 1, 16, 3), np.uint8), 24, "1x16"),
        (np.zeros((2, 16, 16, 3), np.uint8), 0, "fps is 0"),
        (np.zeros((2, 16, 16, 3), np.uint8), -5.0, "> 0"),
    ],
)
def test_bad_input_raises_user_error(tmp_path, frames, fps, fragment):
    with pytest.raises(UserError) as excinfo:
        write_video(tmp_path / "bad.mp4", frames, fps)
    assert fragment in str(excinfo.value)
    assert os.listdir(tmp_path) == []


def test_fps_stride_reading(tmp_path):
    path = tmp_path / "long.mp4"
    frames = np.zeros((48, 16, 16, 3), np.uint8)
    frames[:, :, :, 0] = np.arange(48, dtype=np.uint8)[:, None, None] * 5  # frame id in red
    write_video(path, frames, fps=24)

    strided, fps = read_video(path, target_fps=12)
    assert strided.shape[0] == 24 and fps == 12
    ids = np.round(strided[:, 8, 8, 0].astype(np.float32) / 5)
    assert np.abs(ids - np.arange(0, 48, 2)).max() <= 1

    capped, fps = read_video(path, max_frames=10, start_frame=5)
    assert capped.shape[0] == 10 and fps == 24
    assert abs(round(capped[0, 8, 8, 0] / 5) - 5) <= 1

    same, fps = read_video(path, target_fps=60)  # no upsampling
    assert same.shape[0] == 48 and fps == 24


@pytest.mark.parametrize("kind", ["missing", "empty", "random"])
def test_unreadable_files_raise_user_error_naming_path(tmp_path, kind):
    path = tmp_path / f"{kind}.mp4"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "random":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    for call in (read_video, probe_video):
        with pytest.raises(UserError) as excinfo:
            call(path)
        assert str(path) in str(excinfo.value)


def test_truncated_file_raises_user_error(tmp_path):
    path = tmp_path / "cut.mp4"
    write_video(path, gradient_video(10, 32, 32), fps=24)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError) as excinfo:
        read_video(path)
    assert str(path) in str(excinfo.value)


def test_extension_checks():
    assert is_video_path("a/b.MP4") and is_video_path("x.webm")
    assert not is_video_path("x.png")
    assert is_image_path("x.JPEG") and is_image_path("x.png")
    assert not is_image_path("x.mp4") and not is_image_path("noext")
