"""The VAE trainer's batches: random crops of shapes-world clips rendered on the fly, and crops of
the MMDiT's own latents with the rendered pixels they should decode to.

Every batch is drawn from `np.random.default_rng([seed, step])`, so a resumed run sees exactly
the batches an uninterrupted run would have seen, and DataLoader workers render the same ones.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from opensora.configs import VAEConfig
from training.demo.clips import to_tensor
from training.demo.latent_pairs import GeneratedPair
from training.demo.shapes_world import DEFAULT_NUM_FRAMES, render_clip, render_coverage, sample_spec
from training.demo.vae_config import VAETrainConfig


@dataclass
class VAEBatch:
    video: torch.Tensor  # (B, 3, T, S, S) in [-1, 1]
    coverage: torch.Tensor  # (B, T, S, S): the share of each pixel the object covers
    shapes: list[str]

    def to(self, device: torch.device) -> "VAEBatch":
        return VAEBatch(self.video.to(device), self.coverage.to(device), self.shapes)


@dataclass
class PairBatch:
    latent: torch.Tensor  # (B, C, t, h, w) crops of generated latents, unscaled
    video: torch.Tensor  # (B, 3, T, S, S) the rendered clips' matching pixel crops

    def to(self, device: torch.device) -> "PairBatch":
        return PairBatch(self.latent.to(device), self.video.to(device))


class RenderedBatches(torch.utils.data.Dataset):
    """Step index -> its batch, so DataLoader workers can render the next steps' clips while the
    GPU trains; the batches are the same as without workers. With generated latents, even steps
    are `PairBatch`es."""

    def __init__(self, cfg: VAETrainConfig, vae_config: VAEConfig | None = None, pairs: list[GeneratedPair] | None = None):
        self.cfg, self.vae_config, self.pairs = cfg, vae_config, pairs

    def __len__(self) -> int:
        return self.cfg.steps

    def __getitem__(self, step: int) -> VAEBatch | PairBatch:
        if self.pairs and step % 2 == 0:
            return sample_pair_batch(self.cfg, self.vae_config, self.pairs, step)
        return sample_batch(self.cfg, step)


def batches_from(cfg: VAETrainConfig, start: int, vae_config: VAEConfig | None = None,
                 pairs: list[GeneratedPair] | None = None) -> Iterator[VAEBatch | PairBatch]:
    """The batches of steps start .. cfg.steps - 1, in order."""
    workers = cfg.data_workers
    loader = torch.utils.data.DataLoader(
        RenderedBatches(cfg, vae_config, pairs), batch_size=None, sampler=range(start, cfg.steps),
        num_workers=workers, prefetch_factor=4 if workers else None, persistent_workers=False)
    return iter(loader)


def sample_pair_batch(cfg: VAETrainConfig, vae_config: VAEConfig, pairs: list[GeneratedPair], step: int) -> PairBatch:
    """`batch_size` generated latents, each cropped to the latent frames that decode to the first
    `crop_frames` frames and to `crop_size` pixels, with the rendered clip's matching pixels."""
    rng = np.random.default_rng([cfg.seed, step, 1])
    s = vae_config.spatial_compression
    cells = cfg.crop_size // s
    latent_frames = (cfg.crop_frames - 1) // vae_config.time_compression + 1
    latents, videos = [], []
    for _ in range(cfg.batch_size):
        pair = pairs[int(rng.integers(len(pairs)))]
        z = pair.latent
        y0, x0 = int(rng.integers(z.shape[2] - cells + 1)), int(rng.integers(z.shape[3] - cells + 1))
        latents.append(z[:, :latent_frames, y0:y0 + cells, x0:x0 + cells])
        clip = render_clip(pair.spec)[: cfg.crop_frames, y0 * s:(y0 + cells) * s, x0 * s:(x0 + cells) * s]
        videos.append(to_tensor(clip))
    return PairBatch(torch.stack(latents), torch.stack(videos))


def sample_batch(cfg: VAETrainConfig, step: int) -> VAEBatch:
    """Random crops of freshly rendered training clips (held-out combos never appear)."""
    rng = np.random.default_rng([cfg.seed, step])
    images = rng.random() < cfg.image_fraction
    batch, frames = (cfg.image_batch_size, 1) if images else (cfg.batch_size, cfg.crop_frames)
    crops, coverages, shapes = [], [], []
    for _ in range(batch):
        # Render full-length clips so motion speeds match the real data, then crop a window.
        spec = sample_spec(rng, held_out=False, num_frames=DEFAULT_NUM_FRAMES)
        clip = render_clip(spec)
        t0 = int(rng.integers(clip.shape[0] - frames + 1))
        y0 = int(rng.integers(clip.shape[1] - cfg.crop_size + 1))
        x0 = int(rng.integers(clip.shape[2] - cfg.crop_size + 1))
        window = (slice(t0, t0 + frames), slice(y0, y0 + cfg.crop_size), slice(x0, x0 + cfg.crop_size))
        crops.append(to_tensor(clip[window]))
        coverages.append(torch.from_numpy(render_coverage(spec)[window]))
        shapes.append(spec.shape)
    return VAEBatch(torch.stack(crops), torch.stack(coverages), shapes)
