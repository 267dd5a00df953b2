"""Reference images/videos for image-to-video and video-to-video conditioning.

Everything is brought to the model's input convention: float (3, T, H, W) in [-1, 1], resized
with Open-Sora's "resize_crop" transform (scale to fill the target keeping aspect ratio, PIL
bicubic, centre crop), so a reference lands exactly as the official pipeline would place it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image, ImageOps

from opensora.errors import UserError
from opensora.io.video import (
    IMAGE_EXTENSIONS,
    VIDEO_EXTENSIONS,
    PathLike,
    is_image_path,
    is_video_path,
    probe_video,
    read_video,
)

_ACCEPTED = "images " + " ".join(IMAGE_EXTENSIONS) + "; videos " + " ".join(VIDEO_EXTENSIONS)


def resize_crop(image: Image.Image, height: int, width: int) -> Image.Image:
    """Scale so the image covers (height, width) with its aspect ratio kept, then centre crop."""
    src_w, src_h = image.size
    scale_h, scale_w = height / src_h, width / src_w
    if scale_h > scale_w:  # height is the tighter side: match it, crop width
        new_h, new_w = height, max(width, round(src_w * scale_h))
    else:
        new_h, new_w = max(height, round(src_h * scale_w)), width
    if (new_w, new_h) != (src_w, src_h):
        image = image.resize((new_w, new_h), Image.BICUBIC)
    top = int(round((new_h - height) / 2.0))
    left = int(round((new_w - width) / 2.0))
    return image.crop((left, top, left + width, top + height))


def _to_model_range(frames: list[Image.Image]) -> torch.Tensor:
    """RGB PIL frames -> float (3, T, H, W) in [-1, 1] (ToTensor then Normalize(0.5, 0.5))."""
    array = np.stack([np.asarray(f, dtype=np.uint8) for f in frames])  # (T, H, W, 3)
    x = torch.from_numpy(array).float().div_(255.0).sub_(0.5).div_(0.5)
    return x.permute(3, 0, 1, 2).contiguous()


def _to_rgb(image: Image.Image) -> Image.Image:
    image = ImageOps.exif_transpose(image)  # phone photos store rotation in EXIF
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        # 16/32-bit grayscale: Image.convert("RGB") would clip everything above 255 to white.
        array = np.asarray(image, dtype=np.float32)
        peak = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        image = Image.fromarray((array / peak * 255.0).clip(0, 255).round().astype(np.uint8), "L")
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        # Transparent areas have arbitrary (often black) colour underneath; show them as white.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


def _load_image(path: Path) -> Image.Image:
    try:
        with Image.open(path) as image:
            image.load()
            return _to_rgb(image)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise UserError(f"cannot read image {path}: not a readable image ({e})") from e


def _check_path(path: Path) -> None:
    if not (is_image_path(path) or is_video_path(path)):
        raise UserError(
            f"unsupported reference file {path} (extension '{path.suffix}'); accepted: {_ACCEPTED}"
        )
    if not path.is_file():
        raise UserError(f"reference file {path} does not exist")
    if path.stat().st_size == 0:
        raise UserError(f"reference file is empty (0 bytes): {path}")


def check_reference_file(path: PathLike, video: bool = False) -> None:
    """Fail now, naming the file, when a reference cannot be used: checked before any model
    loads. `video`: the cond type needs frames of a video (a still image is refused)."""
    path = Path(path)
    _check_path(path)
    if is_image_path(path):
        if video:
            raise UserError(f"this cond type continues a video; {path} is an image (use an i2v type for images)")
        try:
            with Image.open(path) as image:
                image.verify()  # reads the whole file: a text file renamed .png fails here
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
            raise UserError(f"cannot read image {path}: not a readable image ({e})") from None
    else:
        probe_video(path)


def reference_size(path: PathLike) -> tuple[int, int]:
    """(height, width) of a reference image or video as the model will see it (EXIF rotation applied)."""
    path = Path(path)
    _check_path(path)
    if is_image_path(path):
        image = _load_image(path)
        return image.height, image.width
    info = probe_video(path)
    return info.height, info.width


def _check_size(height: int, width: int) -> None:
    if height < 1 or width < 1:
        raise UserError(f"reference size is {height}x{width} (HxW); both must be >= 1")


def load_reference(
    path: PathLike, height: int, width: int, num_frames: int | None = None
) -> torch.Tensor:
    """An image (T=1) or a video (its first ``num_frames`` frames, or all) as float
    (3, T, H, W) in [-1, 1], resized to fill (height, width) and centre cropped."""
    path = Path(path)
    _check_path(path)
    _check_size(height, width)
    if num_frames is not None and num_frames < 1:
        raise UserError(f"num_frames is {num_frames}; must be >= 1 or None")
    if is_image_path(path):
        return _to_model_range([resize_crop(_load_image(path), height, width)])
    frames, _ = read_video(path, max_frames=num_frames)
    return _to_model_range([resize_crop(Image.fromarray(f), height, width) for f in frames])


def reference_from_image(image: Image.Image, height: int, width: int) -> torch.Tensor:
    """An image already in memory as one conditioning frame (3, 1, H, W) in [-1, 1], transformed as a
    reference file would be (resize to fill, centre crop)."""
    _check_size(height, width)
    return _to_model_range([resize_crop(_to_rgb(image), height, width)])


def load_reference_frame(
    path: PathLike, which: Literal["first", "last"], height: int, width: int
) -> torch.Tensor:
    """One conditioning frame as (3, 1, H, W) in [-1, 1]: the image itself, or the first/last
    frame of a video (first for continuing after it, last for leading into it)."""
    if which not in ("first", "last"):
        raise UserError(f"which is {which!r}; must be 'first' or 'last'")
    path = Path(path)
    _check_path(path)
    _check_size(height, width)
    if is_image_path(path):
        return _to_model_range([resize_crop(_load_image(path), height, width)])
    if which == "first":
        frame = read_video(path, max_frames=1)[0][0]
    else:
        frame = _last_video_frame(path)
    return _to_model_range([resize_crop(Image.fromarray(frame), height, width)])


def _last_video_frame(path: Path) -> np.ndarray:
    # Skip to the frame the container says is last, holding one frame in memory instead of the
    # whole clip. A truncated file can claim more frames than it has: then decode everything.
    count = probe_video(path).num_frames
    try:
        frames, _ = read_video(path, start_frame=max(0, count - 1))
    except UserError:
        frames, _ = read_video(path)
    return frames[-1]
