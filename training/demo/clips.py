"""Rendered shapes-world clips as the VAE sees them: float tensors in [-1, 1], and fixed eval sets."""

from __future__ import annotations

import numpy as np
import torch

from training.demo.shapes_world import DEFAULT_NUM_FRAMES, ClipSpec, render_clip, sample_spec


def to_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 (T,H,W,3) -> float (3,T,H,W) in [-1,1]."""
    return torch.from_numpy(frames).permute(3, 0, 1, 2).float() / 127.5 - 1.0


def eval_specs(num: int, seed: int, held_out: bool, num_frames: int = DEFAULT_NUM_FRAMES) -> list[ClipSpec]:
    """Full demo-size (128x128) clips, fixed by `seed`."""
    rng = np.random.default_rng(seed)
    return [sample_spec(rng, held_out=held_out, num_frames=num_frames, aspect_ratio="1:1") for _ in range(num)]


def eval_clips(num: int, seed: int, held_out: bool, num_frames: int = DEFAULT_NUM_FRAMES) -> torch.Tensor:
    """(N,3,T,128,128) the clips of `eval_specs`."""
    return torch.stack([to_tensor(render_clip(spec)) for spec in eval_specs(num, seed, held_out, num_frames)])
