"""The architecture configs a preset names, kept free of torch so reading a preset is instant.

Each model module imports its config from here (`opensora.models.mmdit.MMDiTConfig` is this one;
the Open-Sora 1.2 `STDiT3Config` and `VAEV12Config` too, with the 1.2 frame-count rule).
"""

import math
from dataclasses import dataclass

from opensora.errors import UserError


@dataclass
class MMDiTConfig:
    """Hyper-parameters in the official `Flux(**model)` vocabulary."""

    in_channels: int = 64  # packed latent features: latent channels x patch_size^2
    vec_in_dim: int = 768  # CLIP pooled vector
    context_in_dim: int = 4096  # T5 hidden states
    hidden_size: int = 3072
    mlp_ratio: float = 4.0
    num_heads: int = 24
    depth: int = 19
    depth_single_blocks: int = 38
    axes_dim: tuple[int, int, int] = (16, 56, 56)
    theta: int = 10000
    qkv_bias: bool = True
    cond_embed: bool = True
    # FLUX.1-dev (guidance-distilled) embeds the guidance scale like the timestep; Open-Sora does not.
    guidance_embed: bool = False
    patch_size: int = 2
    # "rotate_half": pairs (i, i+D/2) as the official v2 checkpoint (use_liger_rope=True);
    # "interleaved": FLUX pairs (2i, 2i+1). diffusers is interleaved, so rotate-half weights
    # get their q/k rows permuted at load time.
    rope: str = "rotate_half"

    def __post_init__(self):
        self.axes_dim = tuple(self.axes_dim)
        head_dim = self.hidden_size // self.num_heads
        if self.hidden_size % self.num_heads or sum(self.axes_dim) != head_dim:
            raise UserError(
                f"MMDiT config: hidden_size {self.hidden_size} / num_heads {self.num_heads} must be an "
                f"integer head size equal to sum(axes_dim) = {sum(self.axes_dim)}"
            )
        # The velocity is final_layer.linear of a hidden_size vector: with more numbers per token than
        # that, part of every token is out of its reach, and sampling leaves the starting noise there.
        if self.in_channels > self.hidden_size:
            raise UserError(
                f"MMDiT config: in_channels {self.in_channels} (numbers per image token) must be at most "
                f"hidden_size {self.hidden_size}: the output projection reaches only {self.hidden_size} "
                f"of them, so sampling would leave the rest of the starting noise in every video"
            )
        # diffusers' FLUX blocks hard-wire these values; the official v2 model uses the same.
        if self.mlp_ratio != 4.0 or not self.qkv_bias or self.theta != 10000:
            raise UserError("MMDiT config: only mlp_ratio 4.0, qkv_bias true and theta 10000 are supported")
        if self.rope not in ("rotate_half", "interleaved"):
            raise UserError(f"MMDiT config: rope must be 'rotate_half' or 'interleaved', got {self.rope!r}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def latent_channels(self) -> int:
        return self.in_channels // (self.patch_size**2)

    @property
    def cond_channels(self) -> int:
        """Packed condition features: (mask + latent channels) x patch_size^2 (68 for the v2 model)."""
        return (self.latent_channels + 1) * self.patch_size**2 if self.cond_embed else 0


@dataclass
class VAEConfig:
    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
    layers_per_block: int = 2
    norm_num_groups: int = 32
    latent_channels: int = 16
    scale_factor: float = 0.476986
    shift_factor: float = 0.0
    time_compression: int = 4
    spatial_compression: int = 8
    mid_block_add_attention: bool = True
    spatial_tiling: bool = True
    tile_size: int = 256  # pixels; the official sample_size
    tile_overlap_factor: float = 0.25

    def __post_init__(self):
        self.block_out_channels = tuple(self.block_out_channels)

    def latent_frames(self, num_frames: int) -> int:
        """Causal compression: the first frame alone, then groups of 4."""
        return 1 if num_frames == 1 else (num_frames - 1) // self.time_compression + 1


@dataclass
class TextConfig:
    t5_max_length: int = 512
    clip_max_length: int = 77
    # Only used to build random-weight encoders (tiny-random preset): T5 width = MMDiT context_in_dim,
    # CLIP width = MMDiT vec_in_dim.
    t5_layers: int = 2
    t5_heads: int = 2
    t5_ff: int = 64
    clip_layers: int = 2
    clip_heads: int = 2
    clip_ff: int = 64


# ---------------------------------------------------------------------------------------------
# Open-Sora 1.2 (opensora.models.stdit3, opensora.models.vae_v1_2)


@dataclass
class STDiT3Config:
    """Hyper-parameters in the official `STDiT3Config` vocabulary (defaults: STDiT3-XL/2)."""

    hidden_size: int = 1152
    depth: int = 28
    num_heads: int = 16
    patch_size: tuple[int, int, int] = (1, 2, 2)
    in_channels: int = 4
    caption_channels: int = 4096
    model_max_length: int = 300
    qk_norm: bool = True
    mlp_ratio: float = 4.0
    input_sq_size: int = 512
    pred_sigma: bool = True

    def __post_init__(self):
        self.patch_size = tuple(self.patch_size)
        if self.hidden_size % self.num_heads or (self.hidden_size // self.num_heads) % 2:
            raise UserError(
                f"STDiT3 config: hidden_size {self.hidden_size} / num_heads {self.num_heads} must be an even "
                "integer head size (RoPE rotates pairs)"
            )
        if self.hidden_size % 4:
            raise UserError(f"STDiT3 config: hidden_size {self.hidden_size} must be a multiple of 4 (2-D sin-cos)")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def out_channels(self) -> int:
        """pred_sigma doubles the output; only the first in_channels (the velocity) are used."""
        return self.in_channels * 2 if self.pred_sigma else self.in_channels


@dataclass
class VAEV12Config:
    """Defaults: the official OpenSoraVAE_V1_2 (SDXL-VAE spatial part, VAE_Temporal_SD)."""

    # spatial AutoencoderKL (diffusers names)
    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
    layers_per_block: int = 2
    norm_num_groups: int = 32
    # temporal VAE (official VAE_Temporal names, prefixed)
    temporal_filters: int = 128
    temporal_num_res_blocks: int = 4
    temporal_channel_multipliers: tuple[int, ...] = (1, 2, 2, 4)
    temporal_downsample: tuple[bool, ...] = (False, True, True)
    temporal_num_groups: int = 32
    # pipeline
    latent_channels: int = 4
    micro_frame_size: int = 17  # pixel frames per temporal chunk
    micro_batch_size: int = 4  # frames per spatial encode/decode call
    shift: tuple[float, ...] = (-0.10, 0.34, 0.27, 0.98)
    scale: tuple[float, ...] = (3.85, 2.32, 2.33, 3.06)

    def __post_init__(self):
        for name in ("block_out_channels", "temporal_channel_multipliers", "temporal_downsample", "shift", "scale"):
            setattr(self, name, tuple(getattr(self, name)))
        if len(self.temporal_downsample) != len(self.temporal_channel_multipliers) - 1:
            raise UserError(
                f"VAE v1.2 config: temporal_downsample needs {len(self.temporal_channel_multipliers) - 1} entries "
                f"(one per level but the last), got {len(self.temporal_downsample)}"
            )
        if len(self.shift) != self.latent_channels or len(self.scale) != self.latent_channels:
            raise UserError(f"VAE v1.2 config: shift and scale need {self.latent_channels} values each")

    @property
    def spatial_compression(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1)

    @property
    def time_compression(self) -> int:
        return 2 ** sum(self.temporal_downsample)

    @property
    def latent_frames_per_chunk(self) -> int:
        return math.ceil(self.micro_frame_size / self.time_compression)

    def latent_frames(self, num_frames: int) -> int:
        return latent_frames_v1_2(num_frames, self.micro_frame_size, self.time_compression)


def latent_frames_v1_2(num_frames: int, micro_frame_size: int = 17, time_compression: int = 4) -> int:
    """Latent frames of `num_frames` pixel frames: each 17-frame chunk -> 5, a shorter rest r -> ceil(r/4)."""
    full, rest = divmod(num_frames, micro_frame_size)
    return full * math.ceil(micro_frame_size / time_compression) + math.ceil(rest / time_compression)


def check_num_frames_v1_2(num_frames: int, max_frames: int | None = None, micro_frame_size: int = 17) -> int:
    """Accepted counts: 1 (an image) or micro_frame_size .. max_frames.

    2..16 frames encode fine, but the official timestep transform scales by floor(F/17) and gives a
    NaN schedule for them; the 4k+1 rule of Open-Sora 2.0 does not apply (34, 40, 51 are all fine).
    """
    upper = f"..{max_frames}" if max_frames else " or more"
    if not isinstance(num_frames, int) or isinstance(num_frames, bool):
        raise UserError(f"num_frames must be an integer, got {num_frames!r}")
    too_long = max_frames is not None and num_frames > max_frames
    if num_frames != 1 and (num_frames < micro_frame_size or too_long):
        raise UserError(
            f"num_frames {num_frames} is not supported by Open-Sora 1.2: use 1 (an image) or "
            f"{micro_frame_size}{upper} frames (2..{micro_frame_size - 1} give the official schedule a "
            f"division by zero)"
        )
    return num_frames
