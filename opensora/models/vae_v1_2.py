"""The Open-Sora 1.2 video VAE (OpenSoraVAE_V1_2): an SD-style 2-D VAE per frame, then a causal
temporal VAE that compresses time 4x, in chunks of 17 pixel frames.

encode: pixels (B,3,F,H,W) in [-1,1] -> latent (B,4,T,H/8,W/8), T = latent_frames(F)
decode: latent, num_frames F -> pixels (B,3,F,8*(H/8),8*(W/8))

The spatial part is diffusers' `AutoencoderKL` (the SDXL VAE config) scaled by the fixed 0.18215
the official wrapper hard-codes (not the SDXL 0.13025); the temporal part is written here. Both
posteriors are sampled (the official encode has no deterministic mode; `sample=False` gives the
means, for tests). The micro-chunking is part of the function: decoding all latent frames in one
call gives other frames and another count. Numbers: tests/fixtures/opensora_v1_2 (README section B,
sampler_spec_v1_2.md section 9).
"""

from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from safetensors.torch import load_file
from torch import nn

from opensora.configs import VAEV12Config
# The frame-count rules live with the config (torch-free: settings are checked before torch loads).
from opensora.configs import check_num_frames_v1_2 as check_num_frames  # noqa: F401
from opensora.configs import latent_frames_v1_2 as latent_frames
from opensora.errors import UserError

SPATIAL_SCALE = 0.18215  # hard-coded by the official VideoAutoencoderKL
SPATIAL_PREFIX_OFFICIAL = "spatial_vae.module."
SPATIAL_PREFIX_MODULE = "spatial_vae."


# ---------------------------------------------------------------------------------------------
# The temporal VAE (official VAE_Temporal: MAGVIT-style causal 3-D convs, 4x in time, 1x in space)


class CausalConv3d(nn.Module):
    """Zero-pads k-1+(1-stride) frames in front (causal) and k//2 on each spatial side."""

    def __init__(self, chan_in: int, chan_out: int, kernel: int, stride: int = 1, bias: bool = True):
        super().__init__()
        self.padding = (kernel // 2, kernel // 2, kernel // 2, kernel // 2, kernel - 1 + (1 - stride), 0)
        self.conv = nn.Conv3d(chan_in, chan_out, kernel, stride=(stride, 1, 1), bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, self.padding))


class ResBlock(nn.Module):
    def __init__(self, chan_in: int, chan_out: int, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, chan_in)
        self.conv1 = CausalConv3d(chan_in, chan_out, 3, bias=False)
        self.norm2 = nn.GroupNorm(groups, chan_out)
        self.conv2 = CausalConv3d(chan_out, chan_out, 3, bias=False)
        self.conv3 = CausalConv3d(chan_in, chan_out, 1, bias=False) if chan_in != chan_out else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return h + (x if self.conv3 is None else self.conv3(x))


def res_stack(chan_in: int, chan_out: int, count: int, groups: int) -> nn.ModuleList:
    return nn.ModuleList(ResBlock(chan_in if i == 0 else chan_out, chan_out, groups) for i in range(count))


class TemporalEncoder(nn.Module):
    def __init__(self, config: VAEV12Config):
        super().__init__()
        filters, groups, n = config.temporal_filters, config.temporal_num_groups, config.temporal_num_res_blocks
        widths = [filters * m for m in config.temporal_channel_multipliers]
        self.conv_in = CausalConv3d(config.latent_channels, filters, 3, bias=False)
        self.block_res_blocks = nn.ModuleList(
            res_stack(filters if i == 0 else widths[i - 1], widths[i], n, groups) for i in range(len(widths))
        )
        # Identity where a level does not downsample (no parameters, keeps the official indices).
        self.conv_blocks = nn.ModuleList(
            CausalConv3d(widths[i], widths[i], 3, stride=2) if down else nn.Identity()
            for i, down in enumerate(config.temporal_downsample)
        )
        self.res_blocks = res_stack(widths[-1], widths[-1], n, groups)
        self.norm1 = nn.GroupNorm(groups, widths[-1])
        self.conv2 = CausalConv3d(widths[-1], 2 * config.latent_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)
        for i, blocks in enumerate(self.block_res_blocks):
            for block in blocks:
                x = block(x)
            if i < len(self.conv_blocks):
                x = self.conv_blocks[i](x)
        for block in self.res_blocks:
            x = block(x)
        return self.conv2(F.silu(self.norm1(x)))


class TemporalDecoder(nn.Module):
    def __init__(self, config: VAEV12Config):
        super().__init__()
        groups, n = config.temporal_num_groups, config.temporal_num_res_blocks
        widths = [config.temporal_filters * m for m in config.temporal_channel_multipliers]
        self.temporal_downsample = config.temporal_downsample
        self.conv1 = CausalConv3d(config.latent_channels, widths[-1], 3)
        self.res_blocks = res_stack(widths[-1], widths[-1], n, groups)
        # Level i reads level i+1's width (the deepest reads its own) and runs last-to-first.
        self.block_res_blocks = nn.ModuleList(
            res_stack(widths[min(i + 1, len(widths) - 1)], widths[i], n, groups) for i in range(len(widths))
        )
        # Upsampling convs before levels 0..L-2: f -> 2f channels, then depth-to-time.
        self.conv_blocks = nn.ModuleList(
            CausalConv3d(widths[i + 1], widths[i + 1] * 2, 3) if down else nn.Identity()
            for i, down in enumerate(config.temporal_downsample)
        )
        self.norm1 = nn.GroupNorm(groups, widths[0])
        self.conv_out = CausalConv3d(widths[0], config.latent_channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        for block in self.res_blocks:
            x = block(x)
        for i in reversed(range(len(self.block_res_blocks))):
            for block in self.block_res_blocks[i]:
                x = block(x)
            if i > 0:
                x = self.conv_blocks[i - 1](x)
                if self.temporal_downsample[i - 1]:  # (C, 2) channels -> 2x frames
                    b, c, t, h, w = x.shape
                    x = x.view(b, c // 2, 2, t, h, w).permute(0, 1, 3, 2, 4, 5).reshape(b, c // 2, t * 2, h, w)
        return self.conv_out(F.silu(self.norm1(x)))


class TemporalVAE(nn.Module):
    def __init__(self, config: VAEV12Config):
        super().__init__()
        self.time_compression = config.time_compression
        c = config.latent_channels
        self.encoder = TemporalEncoder(config)
        self.quant_conv = CausalConv3d(2 * c, 2 * c, 1)
        self.post_quant_conv = CausalConv3d(c, c, 1)
        self.decoder = TemporalDecoder(config)

    def front_padding(self, num_frames: int) -> int:
        return (-num_frames) % self.time_compression

    def moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One chunk: zero frames in front up to a multiple of 4, then (mean, clamped logvar)."""
        x = F.pad(x, (0, 0, 0, 0, self.front_padding(x.shape[2]), 0))
        mean, logvar = self.quant_conv(self.encoder(x)).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def decode(self, z: torch.Tensor, num_frames: int) -> torch.Tensor:
        x = self.decoder(self.post_quant_conv(z))
        return x[:, :, self.front_padding(num_frames) :]


# ---------------------------------------------------------------------------------------------


def _spatial_autoencoder(config: VAEV12Config) -> AutoencoderKL:
    levels = len(config.block_out_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        block_out_channels=config.block_out_channels,
        layers_per_block=config.layers_per_block,
        act_fn="silu",
        latent_channels=config.latent_channels,
        norm_num_groups=config.norm_num_groups,
        scaling_factor=SPATIAL_SCALE,  # informative only: the wrapper applies it itself
    )


def _randn(shape, generator: torch.Generator | None, like: torch.Tensor) -> torch.Tensor:
    # The generator lives on the CPU (as the official global-RNG draws); same numbers on any device.
    return torch.randn(shape, generator=generator, dtype=torch.float32).to(like)


class VideoVAEV12(nn.Module):
    """encode(pixels) -> normalised latent; decode(latent, num_frames) -> pixels."""

    def __init__(self, config: VAEV12Config):
        super().__init__()
        self.config = config
        self.spatial_vae = _spatial_autoencoder(config)
        self.temporal_vae = TemporalVAE(config)
        shape = (1, config.latent_channels, 1, 1, 1)
        self.register_buffer("scale", torch.tensor(config.scale).view(shape))
        self.register_buffer("shift", torch.tensor(config.shift).view(shape))

    def latent_frames(self, num_frames: int) -> int:
        return latent_frames(num_frames, self.config.micro_frame_size, self.config.time_compression)

    def latent_size(self, num_frames: int, height: int, width: int) -> tuple[int, int, int]:
        """(T, h, w); the SD-VAE floors odd sizes (426 px -> 53 -> 424 decoded columns)."""
        unit = self.config.spatial_compression
        return self.latent_frames(num_frames), height // unit, width // unit

    def _frames(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        return x.transpose(1, 2).reshape(b * t, c, h, w)

    def _video(self, x: torch.Tensor, batch: int) -> torch.Tensor:
        bt, c, h, w = x.shape
        return x.view(batch, bt // batch, c, h, w).transpose(1, 2)

    def encode_spatial(self, video: torch.Tensor, sample: bool = True, generator=None) -> torch.Tensor:
        """0.18215 * posterior sample (or mean) per frame, in micro-batches of frames (one draw each)."""
        frames, out = self._frames(video), []
        for chunk in frames.split(self.config.micro_batch_size):
            posterior = self.spatial_vae.encode(chunk).latent_dist
            z = posterior.mean
            if sample:
                z = z + posterior.std * _randn(z.shape, generator, z)
            out.append(z * SPATIAL_SCALE)
        return self._video(torch.cat(out), video.shape[0])

    def encode_temporal(self, x_z: torch.Tensor, sample: bool = True, generator=None) -> torch.Tensor:
        """Per 17-frame chunk (the last may be shorter): posterior sample (or mean), unnormalised."""
        out = []
        for chunk in x_z.split(self.config.micro_frame_size, dim=2):
            mean, logvar = self.temporal_vae.moments(chunk)
            z = mean
            if sample:
                z = z + torch.exp(0.5 * logvar) * _randn(z.shape, generator, z)
            out.append(z)
        return torch.cat(out, dim=2)

    def encode(self, video: torch.Tensor, sample: bool = True, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B,3,F,H,W) in [-1,1] -> (B,4,T,H/8,W/8) = (z - shift) / scale.

        With `sample` (the official behaviour) the draws come from `generator` in the official order
        (every spatial micro-batch, then every temporal chunk): a CPU generator seeded s gives the
        official result under torch.manual_seed(s)."""
        x_z = self.encode_spatial(video, sample, generator)
        z = self.encode_temporal(x_z, sample, generator)
        return (z - self.shift.to(z)) / self.scale.to(z)

    def decode_temporal(self, z: torch.Tensor, num_frames: int) -> torch.Tensor:
        """Unnormalised latent -> spatial latents of num_frames frames, 5 latent frames per call."""
        expected = self.latent_frames(num_frames)
        if z.shape[2] != expected:
            raise UserError(f"a latent of {z.shape[2]} frames cannot decode to {num_frames} frames (needs {expected})")
        out, remaining = [], num_frames
        for chunk in z.split(self.config.latent_frames_per_chunk, dim=2):
            frames = min(self.config.micro_frame_size, remaining)
            out.append(self.temporal_vae.decode(chunk, frames))
            remaining -= self.config.micro_frame_size
        return torch.cat(out, dim=2)

    def decode_spatial(self, x_z: torch.Tensor) -> torch.Tensor:
        frames = self._frames(x_z)
        out = [self.spatial_vae.decode(chunk / SPATIAL_SCALE).sample for chunk in frames.split(self.config.micro_batch_size)]
        return self._video(torch.cat(out), x_z.shape[0])

    def decode(self, latent: torch.Tensor, num_frames: int) -> torch.Tensor:
        """(B,4,T,h,w) normalised latent -> (B,3,num_frames,8h,8w) pixels in about [-1,1]."""
        z = latent * self.scale.to(latent) + self.shift.to(latent)
        return self.decode_spatial(self.decode_temporal(z, num_frames))


# ---------------------------------------------------------------------------------------------
# Official checkpoint layout: `spatial_vae.module.<diffusers key>`, `temporal_vae.*`, `scale`, `shift`.


def official_to_module(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {
        (SPATIAL_PREFIX_MODULE + k[len(SPATIAL_PREFIX_OFFICIAL):] if k.startswith(SPATIAL_PREFIX_OFFICIAL) else k): v
        for k, v in state.items()
    }


def module_to_official_name(key: str) -> str:
    if key.startswith(SPATIAL_PREFIX_MODULE):
        return SPATIAL_PREFIX_OFFICIAL + key[len(SPATIAL_PREFIX_MODULE):]
    return key


def build_vae_v1_2(config: VAEV12Config) -> VideoVAEV12:
    return VideoVAEV12(config)


def official_key_shapes(config: VAEV12Config) -> dict[str, tuple[int, ...]]:
    """Every key and shape of the official checkpoint for `config` (nothing allocated)."""
    with torch.device("meta"):
        vae = build_vae_v1_2(config)
    return {module_to_official_name(k): tuple(v.shape) for k, v in vae.state_dict().items()}


NORMALISATION_KEYS = ("scale", "shift")


def load_vae_v1_2(path: Path, config: VAEV12Config, dtype=torch.float32, device="cpu") -> VideoVAEV12:
    """The official `hpcai-tech/OpenSora-VAE-v1.2` model.safetensors, every key checked first.

    `scale`/`shift` are buffers: a file without both gets the config's (official) values, as the
    official from_pretrained keeps its constructor's buffers for keys a file lacks."""
    # Imported here: opensora.checkpoints imports the presets, which import the model configs.
    from opensora.checkpoints import check_keys, read_shapes

    path = Path(path)
    expected = official_key_shapes(config)
    found = read_shapes(path)
    if not any(k in found for k in NORMALISATION_KEYS):
        expected = {k: v for k, v in expected.items() if k not in NORMALISATION_KEYS}
    check_keys(found, expected, path, "Open-Sora 1.2 VAE weights")
    state = official_to_module(load_file(str(path)))
    for name in NORMALISATION_KEYS:
        state.setdefault(name, torch.tensor(getattr(config, name)).view(1, -1, 1, 1, 1))
    with torch.device("meta"):
        vae = build_vae_v1_2(config)
    vae.load_state_dict(state, strict=True, assign=True)
    return vae.to(device=device, dtype=dtype).eval()
