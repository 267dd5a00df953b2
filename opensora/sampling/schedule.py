"""The official Open-Sora 2.0 timestep schedule on diffusers' flow-matching Euler scheduler.

Open-Sora shifts a linear 1 -> 0 grid by alpha = (1 + (S - 256) / 1920) * sqrt(T), S = tokens
of one latent frame, T = latent frames (used directly as the shift factor, not exp(mu) as in
FLUX). `FlowMatchEulerDiscreteScheduler(shift=alpha)` with explicit sigmas computes exactly the
official float32 values.
"""

import math

import torch
from diffusers import FlowMatchEulerDiscreteScheduler


def shift_alpha(tokens_per_frame: int, latent_frames: int) -> float:
    slope = (3 - 1) / (4096 - 256)
    intercept = 1 - 256 * slope
    return (slope * tokens_per_frame + intercept) * math.sqrt(latent_frames)


def shift_factor(tokens_per_frame: int, latent_frames: int, shift: bool = True, flow_shift: float | None = None) -> float:
    """The alpha of t' = alpha t / (1 + (alpha - 1) t) for a latent of this size: 1 with shifting off,
    the preset's fixed `flow_shift` when it has one, else the official resolution/length rule. The
    sampler's schedule and the trainer's timesteps (training/flow_matching.py) both use it."""
    if not shift:
        return 1.0
    return float(flow_shift) if flow_shift is not None else shift_alpha(tokens_per_frame, latent_frames)


def make_scheduler(
    num_steps: int, tokens_per_frame: int, latent_frames: int, shift: bool = True, flow_shift: float | None = None
) -> FlowMatchEulerDiscreteScheduler:
    """A scheduler whose `sigmas` (num_steps + 1 values, last 0) are the official timesteps."""
    alpha = shift_factor(tokens_per_frame, latent_frames, shift, flow_shift)
    scheduler = FlowMatchEulerDiscreteScheduler(shift=alpha)
    scheduler.set_timesteps(sigmas=torch.linspace(1, 0, num_steps + 1)[:-1].tolist())
    return scheduler


def official_timesteps(
    num_steps: int, tokens_per_frame: int, latent_frames: int, shift: bool = True, flow_shift: float | None = None
) -> list[float]:
    return make_scheduler(num_steps, tokens_per_frame, latent_frames, shift, flow_shift).sigmas.tolist()
