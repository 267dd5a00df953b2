"""Rectified-flow training objective, modelled on the official Open-Sora 2.0 training code.

    t   ~ sigmoid(N(mean, std))                 logit-normal
    t'  = alpha t / (1 + (alpha - 1) t)         the inference shift for this clip's size
    x_t = (1 - t') x0 + t' eps                  t' = 1 is pure noise, as in sampling
    v   = eps - x0                              the MMDiT predicts v
    loss = mean over tokens of (v_pred - v)^2, optionally weighted up at object outlines

alpha is the resolution/length-dependent shift `shift_alpha(tokens_per_frame, latent_frames)`
that the sampler uses (or the preset's fixed flow_shift, or 1 when the preset turns shifting
off), so training puts its timesteps where inference spends its steps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from opensora.presets import SamplerDefaults
from opensora.sampling.schedule import shift_alpha


def timestep_shift(sampler: SamplerDefaults, tokens_per_frame: int, latent_frames: int) -> float:
    """The same alpha `opensora.sampling.schedule.make_scheduler` uses for this latent size."""
    if not sampler.shift:
        return 1.0
    if sampler.flow_shift is not None:
        return float(sampler.flow_shift)
    return shift_alpha(tokens_per_frame, latent_frames)


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


OUTLINE_CONTRAST = 0.1  # latent units (unit variance after scale_factor): flat regions stay far below


def outline_weight_map(x0: torch.Tensor, strength: float) -> torch.Tensor:
    """Per-element loss weights (B, C, T, H, W): 1 + strength on latent cells at an outline, else 1.

    A cell is on an outline when some channel differs from the mean of its 3x3 spatial
    neighbourhood by more than OUTLINE_CONTRAST. Corners and tips, what tells a square from a
    circle, are a few percent of the cells, so a plain mean lets the model trade them away.
    `training.vae_trainer.edge_weights` does this for pixels with a 2-px band; a latent cell is
    4-8 px, so here the band is the cells next to the edge.
    """
    b, c, t, h, w = x0.shape
    frames = x0.float().transpose(1, 2).reshape(b * t, c, h, w)
    local_mean = F.avg_pool2d(F.pad(frames, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    outline = (frames - local_mean).abs().amax(dim=1, keepdim=True) > OUTLINE_CONTRAST
    weight = 1.0 + strength * outline.float()
    return weight.reshape(b, t, 1, h, w).transpose(1, 2).expand(b, c, t, h, w)


def flow_matching_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    token_weight: torch.Tensor | None = None,
    element_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Weighted mean squared error over packed tokens (B, N, F), in float32.

    token_weight (B, N) of 0/1 leaves tokens out (e.g. conditioned frames); element_weight
    (B, N, F) weighs single numbers (e.g. `outline_weight_map`, packed); None: weight 1.
    """
    error = (pred.float() - target.float()).pow(2)
    weight = torch.ones_like(error) if element_weight is None else element_weight.to(error)
    if token_weight is not None:
        weight = weight * token_weight.to(error).unsqueeze(-1)
    return (error * weight).sum() / weight.sum().clamp_min(1.0)
