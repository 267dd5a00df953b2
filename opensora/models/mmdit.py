"""The Open-Sora 2.0 MMDiT, run by diffusers' `FluxTransformer2DModel`.

Open-Sora 2.0 is a FLUX-style MMDiT (double-stream then single-stream blocks, 3D RoPE over
(t, h, w)) plus a `cond_in` projection of the image/video condition. diffusers' FLUX model is the
same network once `img_in` and `cond_in` are merged into one input projection over the
concatenated `[img, cond]` features; `mmdit_convert.py` maps the official weights onto it.
"""

import torch
from diffusers import FluxTransformer2DModel

from opensora.configs import MMDiTConfig  # noqa: F401 - the model's config lives with the presets


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
