"""Rectified-flow training objective, modelled on the official Open-Sora 2.0 training code.

    t   ~ sigmoid(N(mean, std))                 logit-normal
    t'  = alpha t / (1 + (alpha - 1) t)         the inference shift for this clip's size
    x_t = (1 - t') x0 + t' eps                  t' = 1 is pure noise, as in sampling
    v   = eps - x0                              the MMDiT predicts v
    loss = mean over tokens of (v_pred - v)^2

alpha is the resolution/length-dependent shift `shift_alpha(tokens_per_frame, latent_frames)`
that the sampler uses (or the preset's fixed flow_shift, or 1 when the preset turns shifting
off), so training puts its timesteps where inference spends its steps.
"""

from __future__ import annotations

import torch

from opensora.presets import SamplerDefaults
from opensora.sampling.schedule import shift_factor


def timestep_shift(sampler: SamplerDefaults, tokens_per_frame: int, latent_frames: int) -> float:
    """The alpha the preset's sampler uses for this latent size (`opensora.sampling.schedule.shift_factor`)."""
    return shift_factor(tokens_per_frame, latent_frames, sampler.shift, sampler.flow_shift)


def shift_timesteps(t: torch.Tensor, alpha: float) -> torch.Tensor:
    return alpha * t / (1 + (alpha - 1) * t)


def sample_timesteps(
    batch: int, alpha: float, generator: torch.Generator, mean: float = 0.0, std: float = 1.0
) -> torch.Tensor:
    """(batch,) shifted logit-normal flow times in (0, 1), on the CPU."""
    t = torch.sigmoid(mean + std * torch.randn(batch, generator=generator))
    return shift_timesteps(t, alpha)


def noisy_latent(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t = (1 - t) x0 + t noise, t (B,) broadcast over the other dims."""
    t = t.to(x0.dtype).view(-1, *([1] * (x0.dim() - 1)))
    return (1 - t) * x0 + t * noise


def velocity_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    return noise - x0


def flow_matching_loss(pred: torch.Tensor, target: torch.Tensor, token_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error over packed tokens (B, N, F), in float32.

    token_weight (B, N) of 0/1 leaves tokens out (e.g. conditioned frames); None: every token.
    """
    error = (pred.float() - target.float()).pow(2)
    weight = torch.ones_like(error)
    if token_weight is not None:
        weight = weight * token_weight.to(error).unsqueeze(-1)
    return (error * weight).sum() / weight.sum().clamp_min(1.0)
