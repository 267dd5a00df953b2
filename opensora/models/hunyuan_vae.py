"""The HunyuanVideo causal 3D VAE (4x8x8, 16 channels) through diffusers' `AutoencoderKLHunyuanVideo`.

The official key names are diffusers' key names, so the official `hunyuan_vae.safetensors` loads
unchanged. This wrapper adds what the official inference does around the network: the latent
scale/shift, posterior sampling, and spatial tiling with the official tile size and overlap.

Temporal tiling is off by default, as in the official inference (all frames decoded at once, so
decode memory grows with the video's length). `set_temporal_tiling(True)` switches on diffusers'
frame-wise decode: overlapping chunks of latent frames, blended linearly where they overlap, so
the memory a decode adds stays that of one chunk; the pixels differ slightly from the official ones.
"""

import torch
from diffusers import AutoencoderKLHunyuanVideo
from torch import nn

from opensora.configs import VAEConfig  # noqa: F401 - the model's config lives with the presets
from opensora.errors import UserError


class HunyuanVAE(nn.Module):
    """encode: pixels (B,3,T,H,W) in [-1,1] -> scaled latents; decode: scaled latents -> pixels."""

    def __init__(self, config: VAEConfig):
        super().__init__()
        self.config = config
        levels = len(config.block_out_channels)
        self.model = AutoencoderKLHunyuanVideo(
            in_channels=3,
            out_channels=3,
            latent_channels=config.latent_channels,
            down_block_types=("HunyuanVideoDownBlock3D",) * levels,
            up_block_types=("HunyuanVideoUpBlock3D",) * levels,
            block_out_channels=config.block_out_channels,
            layers_per_block=config.layers_per_block,
            norm_num_groups=config.norm_num_groups,
            scaling_factor=config.scale_factor,
            spatial_compression_ratio=config.spatial_compression,
            temporal_compression_ratio=config.time_compression,
            mid_block_add_attention=config.mid_block_add_attention,
        )
        self.set_tiling(config.spatial_tiling, config.tile_size)
        # The official inference never tiles over time; diffusers' frame-wise path gives other numbers.
        self.model.use_framewise_encoding = False
        self.set_temporal_tiling(False)

    def set_tiling(self, enabled: bool, tile_size: int | None = None) -> None:
        """Spatial tiling exactly as the official VAE: tiles of `tile_size` px, overlap 1/4."""
        tile = tile_size or self.config.tile_size
        stride = int(tile * (1 - self.config.tile_overlap_factor))
        self.model.use_tiling = enabled
        self.model.tile_sample_min_height = self.model.tile_sample_min_width = tile
        self.model.tile_sample_stride_height = self.model.tile_sample_stride_width = stride

    def set_temporal_tiling(self, enabled: bool, tile_frames: int = 32, stride_frames: int = 24) -> None:
        """Decode in chunks over time (encode is never chunked).

        A chunk is `tile_frames` pixel frames (tile_frames / 4 + 1 latent frames, the first of
        which only primes the causal decoder and is dropped); chunks start every `stride_frames`
        and are blended over the `tile_frames - stride_frames` frames they share. Videos of at most
        `tile_frames` frames decode in one piece either way.
        """
        step = self.config.time_compression
        if tile_frames < step or tile_frames % step or stride_frames % step or not step <= stride_frames <= tile_frames:
            raise UserError(
                f"temporal tiling: tile_frames {tile_frames} and stride_frames {stride_frames} must be multiples "
                f"of {step} with {step} <= stride_frames <= tile_frames"
            )
        self.model.use_framewise_decoding = enabled
        self.model.tile_sample_min_num_frames = tile_frames
        self.model.tile_sample_stride_num_frames = stride_frames

    @property
    def temporal_tiling(self) -> bool:
        return self.model.use_framewise_decoding

    def moments(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and clamped log-variance, unscaled."""
        posterior = self.model.encode(video).latent_dist
        return posterior.mean, posterior.logvar

    def encode(
        self, video: torch.Tensor, sample: bool = True, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Scaled latent `scale * (z - shift)`; z is a posterior sample (the official default) or the mean."""
        mean, logvar = self.moments(video)
        z = mean
        if sample:
            noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
            z = mean + torch.exp(0.5 * logvar) * noise
        return self.config.scale_factor * (z - self.config.shift_factor)

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        z = latent / self.config.scale_factor + self.config.shift_factor
        return self.model.decode(z).sample
