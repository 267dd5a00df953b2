"""Video files in and out, through PyAV only.

Why PyAV: it raises on bad sizes and codec errors instead of silently writing an empty file,
and it gives direct control over codec, pixel format and container flags.

Written files are H.264 (libx264) in yuv420p inside mp4 with the index at the front
(``+faststart``) so they play in any browser, including progressively while downloading.
"""

from __future__ import annotations

import numbers
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

from opensora.errors import UserError

VIDEO_EXTENSIONS = (".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")

# crf 18 is "visually lossless" for x264; preset "medium" is its default speed/size trade-off.
_CRF = "18"
_PRESET = "medium"
# Repeatable output: with B-frames, libx264 (as PyAV ships it) writes different bytes from run to run,
# even single-threaded (decoded frames up to ~80 levels apart, measured); without them 12 of 12 runs
# matched, for files ~16-25% larger. A remake (Reuse, an extension's sidecar) must give the same frames.
_X264_PARAMS = "bframes=0"

PathLike = str | os.PathLike


@dataclass(frozen=True)
class VideoInfo:
    num_frames: int
    height: int
    width: int
    fps: float


def is_video_path(path: PathLike) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def is_image_path(path: PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


# --------------------------------------------------------------------------- writing


def _to_uint8_thwc(frames: np.ndarray | torch.Tensor) -> np.ndarray:
    """Validate and convert the two accepted layouts to uint8 (T, H, W, 3)."""
    if isinstance(frames, torch.Tensor):
        if not frames.is_floating_point():
            raise UserError(
                f"video tensor has dtype {frames.dtype}; expected a float tensor (3, T, H, W) "
                "with values in [-1, 1]"
            )
        if frames.ndim != 4 or frames.shape[0] != 3:
            raise UserError(
                f"video tensor has shape {tuple(frames.shape)}; expected (3, T, H, W) "
                "with 3 colour channels first"
            )
        if frames.shape[1] == 0:
            raise UserError("video has 0 frames; need at least 1")
        x = frames.detach().to(device="cpu", dtype=torch.float32).clamp(-1.0, 1.0)
        x = ((x + 1.0) / 2.0 * 255.0).round().to(torch.uint8)
        return x.permute(1, 2, 3, 0).contiguous().numpy()

    if isinstance(frames, np.ndarray):
        if frames.dtype != np.uint8:
            raise UserError(
                f"video array has dtype {frames.dtype}; expected uint8 (T, H, W, 3) RGB in [0, 255]"
            )
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise UserError(
                f"video array has shape {frames.shape}; expected (T, H, W, 3) RGB"
            )
        if frames.shape[0] == 0:
            raise UserError("video has 0 frames; need at least 1")
        return frames

    raise UserError(
        f"video frames have type {type(frames).__name__}; expected a uint8 numpy array "
        "(T, H, W, 3) or a float torch tensor (3, T, H, W) in [-1, 1]"
    )


def video_to_uint8(frames: np.ndarray | torch.Tensor) -> np.ndarray:
    """Either accepted layout as the uint8 (T, H, W, 3) RGB frames `encode_video` writes (rounded the same)."""
    return _to_uint8_thwc(frames)


def _make_even(frames: np.ndarray) -> np.ndarray:
    """yuv420p stores chroma at half resolution, so libx264 refuses odd sizes (with an opaque
    'avcodec_open2' error). Crop the last row and/or column instead of resizing: it keeps every
    other pixel exactly where it was."""
    _, h, w, _ = frames.shape
    even_h, even_w = h - h % 2, w - w % 2
    if even_h < 2 or even_w < 2:
        raise UserError(f"video frames are {h}x{w} (HxW); need at least 2x2 pixels")
    if (even_h, even_w) != (h, w):
        frames = frames[:, :even_h, :even_w]
    return np.ascontiguousarray(frames)


def _fps_fraction(fps: float) -> Fraction:
    # A denominator up to 1001 keeps NTSC rates exact (30000/1001) and time bases small.
    return Fraction(fps).limit_denominator(1001)


def write_video(path: PathLike, frames: np.ndarray | torch.Tensor, fps: float) -> None:
    """Encode ``frames`` to an H.264/yuv420p mp4 at ``path``, atomically.

    frames: uint8 numpy (T, H, W, 3) RGB, or float torch (3, T, H, W) in [-1, 1].
    Odd heights/widths lose their last row/column (see ``_make_even``).
    The file is encoded beside the target under a hidden temp name and moved into place with
    ``os.replace``, so readers never see a half-written video.
    """
    from opensora.io.atomic import publish, temp_path

    data = _checked_frames(frames, fps)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The .mp4 suffix lets libavformat pick the mp4 muxer from the name.
    tmp = temp_path(path, suffix=".mp4")
    try:
        encode_video(tmp, data, fps)
        publish(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _checked_frames(frames: np.ndarray | torch.Tensor, fps: float) -> np.ndarray:
    valid_number = isinstance(fps, numbers.Real) and not isinstance(fps, bool)
    if not valid_number or not np.isfinite(fps) or fps <= 0:
        raise UserError(f"fps is {fps!r}; must be a number > 0 (e.g. 24)")
    return _make_even(_to_uint8_thwc(frames))


def encode_video(path: PathLike, frames: np.ndarray | torch.Tensor, fps: float,
                 metadata: dict[str, str] | None = None) -> None:
    """Encode straight into `path` (not atomic: for callers that publish the file themselves).
    `metadata`: container tags (e.g. {"comment": ...}), read back by `read_metadata`."""
    data = _checked_frames(frames, fps)
    _, height, width, _ = data.shape
    try:
        with av.open(str(path), mode="w", format="mp4", options={"movflags": "+faststart"}) as container:
            container.metadata.update(metadata or {})
            stream = container.add_stream("libx264", rate=_fps_fraction(float(fps)))
            stream.width = width
            stream.height = height
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": _CRF, "preset": _PRESET, "x264-params": _X264_PARAMS}
            for rgb in data:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
            container.mux(stream.encode())  # flush delayed (B-)frames
    except av.FFmpegError as e:
        if isinstance(e, OSError):  # a full disk or a vanished folder: the caller names the folder
            raise
        raise UserError(f"could not encode video {path}: {e}") from e


def image_to_uint8(image: torch.Tensor) -> np.ndarray:
    """A float (3, H, W) image in [-1, 1] as uint8 (H, W, 3), rounded as the video frames are."""
    if not isinstance(image, torch.Tensor) or image.ndim != 3:
        got = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise UserError(f"image must be a float tensor (3, H, W) in [-1, 1], got {got}")
    return _to_uint8_thwc(image[:, None])[0]


def encode_png(path: PathLike, image: torch.Tensor) -> None:
    """Write a float (3, H, W) image in [-1, 1] as an 8-bit RGB PNG straight into `path` (not atomic)."""
    from PIL import Image

    Image.fromarray(image_to_uint8(image), "RGB").save(str(path), format="PNG")


# --------------------------------------------------------------------------- reading


def _check_readable(path: Path) -> None:
    if not path.exists():
        raise UserError(f"video file not found: {path}")
    if not path.is_file():
        raise UserError(f"not a file: {path}")
    if path.stat().st_size == 0:
        raise UserError(f"video file is empty (0 bytes): {path}")


def _open_video(path: Path) -> av.container.InputContainer:
    _check_readable(path)
    try:
        container = av.open(str(path), mode="r")
    except (av.FFmpegError, OSError) as e:
        raise UserError(f"cannot read video {path}: not a readable video file ({e})") from e
    if not container.streams.video:
        container.close()
        raise UserError(f"file has no video stream: {path}")
    return container


def _stream_fps(stream: av.VideoStream, path: Path) -> float:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not rate or rate <= 0:
        raise UserError(f"video has no usable frame rate: {path}")
    return float(rate)


def read_metadata(path: PathLike) -> dict[str, str]:
    """The container's tags of a readable video (mp4: its `comment`, `encoder`, ... atoms)."""
    container = _open_video(Path(path))
    try:
        return dict(container.metadata)
    finally:
        container.close()


def probe_video(path: PathLike) -> VideoInfo:
    """Frame count, size and fps. The container's frame count is used when it has one (mp4
    stores it in the index, so this is instant); otherwise frames are decoded and counted."""
    path = Path(path)
    container = _open_video(path)
    try:
        stream = container.streams.video[0]
        fps = _stream_fps(stream, path)
        num_frames = stream.frames
        if num_frames <= 0:  # e.g. webm/mkv carry no per-stream frame count
            num_frames = sum(1 for _ in container.decode(stream))
        return VideoInfo(num_frames=num_frames, height=stream.height, width=stream.width, fps=fps)
    except av.FFmpegError as e:
        raise UserError(f"cannot read video {path}: file is corrupt ({e})") from e
    finally:
        container.close()


def read_video(
    path: PathLike,
    max_frames: int | None = None,
    target_fps: float | None = None,
    start_frame: int = 0,
) -> tuple[np.ndarray, float]:
    """Decode a video to uint8 (T, H, W, 3) RGB and return it with its fps.

    start_frame: source frames to skip first.
    target_fps: when lower than the source fps, keep for each target timestamp k/target_fps the
        nearest source frame (so 48 frames at 24 fps read at 12 fps give 24 frames); the returned
        fps is then target_fps. Higher or equal target_fps returns every frame at the source fps
        (no frame duplication).
    max_frames: cap on the number of returned frames.
    """
    if max_frames is not None and max_frames < 1:
        raise UserError(f"max_frames is {max_frames}; must be >= 1 or None")
    if target_fps is not None and not target_fps > 0:
        raise UserError(f"target_fps is {target_fps}; must be > 0 or None")
    if start_frame < 0:
        raise UserError(f"start_frame is {start_frame}; must be >= 0")

    path = Path(path)
    container = _open_video(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        src_fps = _stream_fps(stream, path)
        step = 1.0
        out_fps = src_fps
        if target_fps is not None and target_fps < src_fps:
            step = src_fps / target_fps  # source frames per output frame
            out_fps = float(target_fps)

        frames: list[np.ndarray] = []
        next_pick = 0  # index (after start_frame) of the next source frame to keep
        for i, frame in enumerate(container.decode(stream)):
            j = i - start_frame
            if j < 0 or j != next_pick:
                continue
            frames.append(frame.to_ndarray(format="rgb24"))
            if max_frames is not None and len(frames) >= max_frames:
                break
            # Nearest source frame to the next target timestamp; round half up like the
            # frame-index arithmetic in most samplers.
            next_pick = int(np.floor(len(frames) * step + 0.5))
    except av.FFmpegError as e:
        raise UserError(f"cannot read video {path}: file is corrupt ({e})") from e
    finally:
        container.close()

    if not frames:
        if start_frame > 0:
            raise UserError(f"video {path} has no frames at or after start_frame={start_frame}")
        raise UserError(f"cannot read video {path}: no decodable frames (truncated or corrupt)")
    return np.stack(frames), out_fps
