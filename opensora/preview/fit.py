"""Fit the latent -> RGB preview map: least squares from each latent pixel's channels to the mean
colour of the pixels it stands for (`python -m opensora fit-preview` runs it on encoded clips)."""

import math

import torch
import torch.nn.functional as F

from opensora.errors import UserError


def latent_frame_groups(num_frames: int, latent_frames: int, time_compression: int) -> list[range]:
    """The pixel frames each latent frame stands for: a causal VAE (HunyuanVideo: 4k+1 frames) keeps
    the first frame alone, then groups of `time_compression`; a non-causal one (the Video DC-AE's
    decode: 4k frames) plain groups."""
    size = time_compression
    if num_frames == latent_frames * size or latent_frames == 1:
        size = num_frames // latent_frames
        return [range(k * size, (k + 1) * size) for k in range(latent_frames)]
    if num_frames == (latent_frames - 1) * size + 1:
        return [range(0, 1)] + [range(1 + k * size, 1 + (k + 1) * size) for k in range(latent_frames - 1)]
    raise UserError(f"{num_frames} pixel frames do not map onto {latent_frames} latent frames "
                    f"({time_compression} frames each)")


def pixels_at_latent_size(video: torch.Tensor, latent_shape: tuple[int, ...], time_compression: int) -> torch.Tensor:
    """(3, T, H, W) pixels -> (3, t, h, w): the mean colour under each latent pixel."""
    t, h, w = latent_shape[-3:]
    groups = latent_frame_groups(video.shape[1], t, time_compression)
    frames = torch.stack([video[:, g.start:g.stop].mean(dim=1) for g in groups], dim=1)
    if frames.shape[-2] % h or frames.shape[-1] % w:
        raise UserError(f"{video.shape[-2]}x{video.shape[-1]} pixels do not map onto a {h}x{w} latent")
    return F.avg_pool2d(frames, (frames.shape[-2] // h, frames.shape[-1] // w))


def fit_projection(latents: list[torch.Tensor], pixels: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(weights (C, 3), bias (3,)) minimising the squared error of bias + latent . weights against
    `pixels`; each pair is a (C, t, h, w) latent and its (3, t, h, w) pixels at latent size."""
    rows = torch.cat([z.double().flatten(1).T for z in latents])  # (N, C)
    targets = torch.cat([p.double().flatten(1).T for p in pixels])  # (N, 3)
    design = torch.cat([rows, torch.ones(len(rows), 1, dtype=rows.dtype)], dim=1)
    solution = torch.linalg.lstsq(design, targets, driver="gelsd").solution  # gelsd: fine with rank-deficient
    return solution[:-1].float(), solution[-1].float()


def project(latent: torch.Tensor, weights: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """(C, t, h, w) latent -> (3, t, h, w) float32 preview pixels, clamped to [-1, 1]: one (3 x C) matmul."""
    channels, *size = latent.shape
    weights, bias = weights.to(latent.device, torch.float32), bias.to(latent.device, torch.float32)
    rgb = torch.addmm(bias[:, None], weights.T, latent.reshape(channels, -1).float())
    return rgb.clamp_(-1, 1).reshape(3, *size)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two videos in [-1, 1] (peak-to-peak 2)."""
    mse = (a.double() - b.double()).pow(2).mean().item()
    return math.inf if mse == 0 else 10 * math.log10(4.0 / mse)
