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


DC_AE_BLOCK_TYPES = ("ResBlock", "EViTS5_GLU")
DC_AE_ATTENTION_HEAD_DIM = 32  # official LiteMLA `dim` inside EfficientViT blocks


@dataclass
class DCAEConfig:
    """Hyper-parameters of `dc_ae_f32("dc-ae-f32t4c128")`; defaults are the full-size model."""

    in_channels: int = 3
    latent_channels: int = 128
    width_list: tuple[int, ...] = (128, 256, 512, 512, 1024, 1024)
    encoder_depth_list: tuple[int, ...] = (2, 2, 2, 3, 3, 3)
    decoder_depth_list: tuple[int, ...] = (3, 3, 3, 3, 3, 3)
    block_type: tuple[str, ...] = ("ResBlock",) * 3 + ("EViTS5_GLU",) * 3
    temporal_downsample: tuple[bool, ...] = (False, False, False, True, True, False)
    time_compression: int = 4
    spatial_compression: int = 32
    # The official inference configs pass no scaling factor: the MMDiT samples unscaled latents.
    scaling_factor: float | None = None
    # configs/diffusion/train/high_compression.py: the trainer's latents are z / 0.493.
    training_scaling_factor: float = 0.493
    spatial_tiling: bool = True
    temporal_tiling: bool = True
    spatial_tile_size: int = 256  # pixels
    temporal_tile_size: int = 32  # frames
    tile_overlap_factor: float = 0.25

    def __post_init__(self):
        for name in ("width_list", "encoder_depth_list", "decoder_depth_list", "block_type", "temporal_downsample"):
            setattr(self, name, tuple(getattr(self, name)))
        stages = len(self.width_list)
        lists = (self.encoder_depth_list, self.decoder_depth_list, self.block_type, self.temporal_downsample)
        if any(len(values) != stages for values in lists):
            raise UserError(f"DC-AE config: every per-stage list must have {stages} entries (one per width)")
        unknown = [b for b in self.block_type if b not in DC_AE_BLOCK_TYPES]
        if unknown:
            raise UserError(f"DC-AE config: unknown block types {unknown}; allowed: {', '.join(DC_AE_BLOCK_TYPES)}")
        narrow = [w for w, b in zip(self.width_list, self.block_type) if b != "ResBlock" and w % DC_AE_ATTENTION_HEAD_DIM]
        if narrow:
            raise UserError(f"DC-AE config: attention stage widths {narrow} must be multiples of {DC_AE_ATTENTION_HEAD_DIM}")
        if min(self.encoder_depth_list + self.decoder_depth_list) < 1:
            raise UserError("DC-AE config: every stage needs depth >= 1 (the video model has no depth-0 stage)")
        if self.spatial_compression != 2 ** (stages - 1):
            raise UserError(
                f"DC-AE config: spatial_compression {self.spatial_compression} must be 2^(stages - 1) = {2 ** (stages - 1)}"
            )
        if self.time_compression != 2 ** sum(self.temporal_downsample[:-1]):
            raise UserError(
                f"DC-AE config: time_compression {self.time_compression} must be 2^(temporally downsampling "
                f"stages) = {2 ** sum(self.temporal_downsample[:-1])}"
            )
        if self.width_list[-1] % self.latent_channels:
            raise UserError(
                f"DC-AE config: latent_channels {self.latent_channels} must divide the last width {self.width_list[-1]}"
            )
        # Tiles and their strides must cut the video where the encoder can take it apart.
        keep = 1 - self.tile_overlap_factor
        spatial, temporal = self.spatial_tile_size, self.temporal_tile_size
        if (spatial % self.spatial_compression or int(spatial * keep) % self.spatial_compression
                or temporal % self.time_compression or int(temporal * keep) % self.time_compression):
            raise UserError(
                f"DC-AE config: tiles of {spatial} px / {temporal} frames and their strides at overlap "
                f"{self.tile_overlap_factor} ({int(spatial * keep)} px / {int(temporal * keep)} frames) must be "
                f"multiples of the compression {self.spatial_compression} / {self.time_compression}"
            )

    @property
    def spatial_tile_latent_size(self) -> int:
        return self.spatial_tile_size // self.spatial_compression

    @property
    def temporal_tile_latent_size(self) -> int:
        return self.temporal_tile_size // self.time_compression

    def latent_frames(self, num_frames: int) -> int:
        """Latent frames the official high-compression sampler draws for a `num_frames` video.

        configs/diffusion/inference/high_compression.py keeps `is_causal_vae=True` from 256px.py, so
        the noise is sized as for the causal VAE: (F - 1) // 4 + 1. The decoder gives 4 frames per
        latent frame and the video is cut to F (129 -> 33 latent frames -> 132 -> 129 frames).
        """
        return 1 if num_frames == 1 else (num_frames - 1) // self.time_compression + 1

    def encoded_frames(self, num_frames: int) -> int:
        """Latent frames of an encoded clip (non-causal): 1 for an image, else groups of 4."""
        return 1 if num_frames == 1 else num_frames // self.time_compression

    def decoded_frames(self, latent_frames: int) -> int:
        return 1 if latent_frames == 1 else latent_frames * self.time_compression

    def accepts_frames(self, num_frames: int) -> bool:
        """Frame counts the encoder takes: 1, or a multiple of 4 (each temporal stage halves T)."""
        return num_frames == 1 or (num_frames >= self.time_compression and num_frames % self.time_compression == 0)

    def check_frames(self, num_frames) -> int:
        if not isinstance(num_frames, int) or not self.accepts_frames(num_frames):
            c = self.time_compression
            raise UserError(
                f"the Video DC-AE cannot encode {num_frames!r} frames: it takes 1 or a multiple of {c} ({c}, {2 * c}, ...)"
            )
        return num_frames

    def check_size(self, height: int, width: int) -> None:
        unit = self.spatial_compression
        if height % unit or width % unit:
            raise UserError(f"the Video DC-AE cannot encode {height}x{width} pixels: height and width must be multiples of {unit}")


@dataclass
class FluxVAEConfig:
    """The FLUX autoencoder (official `autoencoder_2d`: ch 128, ch_mult (1, 2, 4, 4), 2 res blocks)."""

    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
    layers_per_block: int = 2
    latent_channels: int = 16
    norm_num_groups: int = 32
    scale_factor: float = 0.3611
    shift_factor: float = 0.1159

    def __post_init__(self):
        self.block_out_channels = tuple(self.block_out_channels)

    @property
    def spatial_compression(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1)


@dataclass
class FluxSettings:
    """A preset's `[flux]` part: FLUX.1-dev draws the first frame of text -> image -> video
    (the official t2i2v configs). Random-weight presets build a tiny FLUX instead of reading files."""

    transformer: str = "flux1-dev.safetensors"  # in the checkpoint folder, official BFL layout
    autoencoder: str = "flux1-dev-ae.safetensors"  # official LDM layout
    image_resolution: str = "768px"  # bucket table the image is drawn at (official img_resolution)
    use_t2i2v: bool = False  # the preset's default for t2v requests (the t2i2v configs: on)


@dataclass
class SpeedSettings:
    """A preset's `[speed]` part: the step cache (`--cache` spec, see opensora.sampling.cache_spec)
    that `--speed balanced` and `--speed fast` mean for its model, as measured by bench/speed.py;
    `quality` is always no cache. `note`: the one-line trade-off the app shows beside the steps."""

    balanced: str = ""
    fast: str = ""
    note: str = ""


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
