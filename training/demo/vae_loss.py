"""The VAE trainer's loss: edge-weighted L1 + MSE reconstruction, KL, and the optional shape code.

loss = l1_weight * L1 + mse_weight * MSE + kl_weight * KL (+ shape_code_weight * code error),
where the pixel errors weigh the target's outlines up (`edge_weights`) and, with `code_blur`, a
share of the clips is decoded with every channel but the shape code blurred.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from opensora.models.hunyuan_vae import HunyuanVAE
from training.demo.shape_code import shape_code_channels, shape_code_target
from training.demo.vae_batches import PairBatch, VAEBatch
from training.demo.vae_config import VAETrainConfig


def vae_loss(vae: HunyuanVAE, batch: VAEBatch, cfg: VAETrainConfig, generator: torch.Generator):
    video = batch.video
    with torch.set_grad_enabled(cfg.train == "all"):
        mean, logvar = vae.moments(video)
    # Noise from the CPU generator on every device: a run's batches and noise do not depend on it.
    z = mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=generator).to(mean.device)
    if cfg.code_blur > 0:
        noise_std = cfg.code_blur_noise / vae.config.scale_factor
        z = blur_uncoded_channels(z, cfg.code_blur, generator, cfg.code_blur_cells, noise_std)
    recon = vae.model.decode(z).sample
    l1, mse = reconstruction_errors(recon, video, cfg)
    kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).sum() / video.numel()
    loss = cfg.l1_weight * l1 + cfg.mse_weight * mse + cfg.kl_weight * kl
    code_error = torch.zeros((), device=loss.device)
    if cfg.shape_code_weight > 0:
        # In the MMDiT's units (latents times scale_factor, unit variance).
        config = vae.config
        code = shape_code_channels(config.latent_channels)
        target = shape_code_target(batch.coverage, batch.shapes, config.time_compression, config.spatial_compression)
        code_error = (mean[:, code] * config.scale_factor - target).pow(2).mean()
        loss = loss + cfg.shape_code_weight * code_error
    return loss, {"l1": l1.item(), "mse": mse.item(), "kl": kl.item(), "code": code_error.item()}


def reconstruction_errors(recon: torch.Tensor, video: torch.Tensor, cfg: VAETrainConfig):
    """Edge-weighted L1 and MSE of a decoded batch against its target pixels."""
    weight = edge_weights(video, cfg.edge_weight)
    return ((recon - video).abs() * weight).mean(), ((recon - video).pow(2) * weight).mean()


def pair_loss(vae: HunyuanVAE, batch: PairBatch, cfg: VAETrainConfig):
    """The reconstruction terms of `vae_loss` for generated latents against their rendered clips."""
    l1, mse = reconstruction_errors(vae.model.decode(batch.latent).sample, batch.video, cfg)
    loss = cfg.l1_weight * l1 + cfg.mse_weight * mse
    return loss, {"l1": l1.item(), "mse": mse.item(), "kl": 0.0, "code": 0.0}


def blur_uncoded_channels(z: torch.Tensor, share: float, generator: torch.Generator, cells: int = 3,
                          noise_std: float = 0.0) -> torch.Tensor:
    """Blur the non-code channels of a random `share` of the clips over `cells` x `cells` latent
    cells, and add noise of `noise_std` (in z's units) to them.

    The demo MMDiT draws blobs: round, soft-edged objects whatever the caption says. Decoding
    such latents teaches the decoder to take the outline from the shape code, not from details
    of the other channels that an MMDiT does not get right.
    """
    code = shape_code_channels(z.shape[1])
    chosen = torch.rand(z.shape[0], generator=generator) < share
    if not chosen.any():
        return z
    chosen = chosen.to(z.device)
    other = z[:, : code.start]
    # Frame by frame, the mean over the cells of the window that lie inside the latent
    # (avg_pool3d refuses latents narrower than the window; avg_pool2d pads first).
    blurred = F.avg_pool2d(other.flatten(1, 2), cells, stride=1, padding=cells // 2,
                           count_include_pad=False).view_as(other)
    if noise_std > 0:
        blurred = blurred + noise_std * torch.randn(blurred.shape, generator=generator).to(z.device)
    mixed = torch.where(chosen[:, None, None, None, None], blurred, other)
    return torch.cat([mixed, z[:, code]], dim=1)


def edge_weights(video: torch.Tensor, edge_weight: float) -> torch.Tensor:
    """Per-pixel loss weights, mean 1: 1 + edge_weight within 2 px of an edge of the target.

    An object's outline is a few percent of the pixels, so plain MSE rounds corners and blunts
    triangle tips for almost no loss; this makes the outline count.
    """
    if edge_weight == 0:
        return torch.ones((), dtype=video.dtype, device=video.device)
    frames = video.transpose(1, 2).flatten(0, 1)  # (B*T, 3, H, W)
    dy = (frames[:, :, 1:] - frames[:, :, :-1]).abs().amax(dim=1, keepdim=True)
    dx = (frames[:, :, :, 1:] - frames[:, :, :, :-1]).abs().amax(dim=1, keepdim=True)
    edges = torch.zeros_like(frames[:, :1])
    edges[:, :, 1:] = torch.maximum(edges[:, :, 1:], dy)
    edges[:, :, :, 1:] = torch.maximum(edges[:, :, :, 1:], dx)
    band = F.max_pool2d((edges > 0.1).to(video.dtype), kernel_size=5, stride=1, padding=2)
    weight = 1.0 + edge_weight * band
    weight = weight / weight.mean()
    b, t = video.shape[0], video.shape[2]
    return weight.unflatten(0, (b, t)).transpose(1, 2)  # (B, 1, T, H, W)
