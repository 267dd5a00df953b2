"""Resize (keeping the aspect ratio) and centre-crop frames to a bucket's size."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

# Frames resized per call: bounds the float copy of long high-resolution clips (129 frames of
# 1080p would be ~3 GB in float32 at once).
RESIZE_CHUNK = 16


def resize_center_crop(frames: np.ndarray, height: int, width: int) -> torch.Tensor:
    """uint8 (T, H, W, 3) RGB -> float (T, 3, height, width) in [0, 1].

    Scales so the frame covers the target (no padding), bicubic with antialias (smooth when
    shrinking), then crops the centre. Frames already at the target size pass through exactly.
    """
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames have shape {frames.shape}; expected (T, H, W, 3)")
    _, src_h, src_w, _ = frames.shape
    scale = max(height / src_h, width / src_w)
    # max(): rounding must never leave the scaled frame smaller than the crop.
    new_h = max(height, round(src_h * scale))
    new_w = max(width, round(src_w * scale))
    top = (new_h - height) // 2
    left = (new_w - width) // 2

    out = []
    for start in range(0, frames.shape[0], RESIZE_CHUNK):
        # A copy: decoded arrays may be read-only (PIL), which torch.from_numpy warns about.
        chunk = torch.tensor(frames[start : start + RESIZE_CHUNK])
        chunk = chunk.permute(0, 3, 1, 2).float().div_(255.0)
        if (new_h, new_w) != (src_h, src_w):
            chunk = F.interpolate(
                chunk, size=(new_h, new_w), mode="bicubic", antialias=True, align_corners=False
            )
            chunk = chunk.clamp_(0.0, 1.0)  # bicubic overshoots near hard edges
        out.append(chunk[:, :, top : top + height, left : left + width])
    return torch.cat(out).contiguous()
