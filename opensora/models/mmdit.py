"""The Open-Sora 2.0 MMDiT, run by diffusers' `FluxTransformer2DModel`.

Open-Sora 2.0 is a FLUX-style MMDiT (double-stream then single-stream blocks, 3D RoPE over
(t, h, w)) plus a `cond_in` projection of the image/video condition. diffusers' FLUX model is the
same network once `img_in` and `cond_in` are merged into one input projection over the
concatenated `[img, cond]` features; `mmdit_convert.py` maps the official weights onto it.
"""

from dataclasses import dataclass

import torch
from diffusers import FluxTransformer2DModel

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


def build_mmdit(config: MMDiTConfig) -> FluxTransformer2DModel:
    """Instantiate the network (on the current default device, e.g. inside `torch.device("meta")`)."""
    return FluxTransformer2DModel(
        patch_size=1,  # the caller packs 2x2 patches itself, as the official code does
        in_channels=config.in_channels + config.cond_channels,
        out_channels=config.in_channels,
        num_layers=config.depth,
        num_single_layers=config.depth_single_blocks,
        attention_head_dim=config.head_dim,
        num_attention_heads=config.num_heads,
        joint_attention_dim=config.context_in_dim,
        pooled_projection_dim=config.vec_in_dim,
        guidance_embeds=config.guidance_embed,
        axes_dims_rope=config.axes_dim,
    )


def mmdit_forward(
    model: FluxTransformer2DModel,
    img: torch.Tensor,
    cond: torch.Tensor | None,
    txt: torch.Tensor,
    y_vec: torch.Tensor,
    timesteps: torch.Tensor,
    img_ids: torch.Tensor,
    guidance: torch.Tensor | None = None,
) -> torch.Tensor:
    """One call in the official signature.

    img (B, N, in_channels) packed latent; cond (B, N, cond_channels) packed [mask, masked_ref];
    txt (B, L, context_in_dim); y_vec (B, vec_in_dim); timesteps (B,) flow time t in [0, 1];
    img_ids (N, 3) float (t, h, w) positions shared by the batch; guidance (B,) the guidance scale,
    only for models with `guidance_embed`. Returns the velocity (B, N, in_channels).
    """
    hidden = img if cond is None else torch.cat([img, cond.to(img.dtype)], dim=-1)
    txt_ids = torch.zeros(txt.shape[1], 3, dtype=img_ids.dtype, device=img_ids.device)
    return model(
        hidden_states=hidden,
        encoder_hidden_states=txt,
        pooled_projections=y_vec,
        timestep=timesteps,  # diffusers multiplies by 1000 inside, as the official model does
        img_ids=img_ids,
        txt_ids=txt_ids,
        guidance=guidance,  # scaled by 1000 inside, like the timestep
        return_dict=False,
    )[0]
