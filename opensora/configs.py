"""The architecture configs a preset names, kept free of torch so reading a preset is instant.

Each model module imports its config from here (`opensora.models.mmdit.MMDiTConfig` is this one).
"""

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
