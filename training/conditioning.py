"""Random image/video conditioning for training, with the reference taken from the clean latent.

Each sample draws a cond type from the configured mix (t2v, i2v_head, i2v_tail, i2v_loop,
v2v_head, v2v_tail, ...); its mask and masked reference come from the sampler's own
`prepare_condition` with the clip's clean latent x0 as the reference, so training builds exactly
the condition inference builds from a real reference. A type the clip is too short for (any type
on a 1-latent-frame clip, v2v needing more latent frames than the clip has) falls back to t2v.
"""

from __future__ import annotations

import torch

from opensora.sampling.conditioning import V2V_LATENT_FRAMES, prepare_condition


def draw_cond_types(weights: dict[str, float], batch: int, generator: torch.Generator) -> list[str]:
    """`batch` cond types drawn with the (unnormalised) weights."""
    names = [name for name, w in weights.items() if w > 0]
    probs = torch.tensor([weights[name] for name in names], dtype=torch.float64)
    picks = torch.multinomial(probs, batch, replacement=True, generator=generator)
    return [names[i] for i in picks.tolist()]


def fitting_cond_type(cond_type: str, latent_frames: int) -> str:
    """The cond type itself when the clip is long enough for it, else "t2v"."""
    if latent_frames == 1:
        return "t2v"
    if cond_type in V2V_LATENT_FRAMES and V2V_LATENT_FRAMES[cond_type] > latent_frames:
        return "t2v"
    return cond_type


def condition_from_clean_latent(x0: torch.Tensor, cond_types: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """masks (B,1,T,H,W) and masked_ref (B,C,T,H,W) for clean latents x0 (B,C,T,H,W), on x0's device."""
    masks, refs = [], []
    for latent, cond_type in zip(x0, cond_types):
        mask, ref = prepare_condition((1, *latent.shape), cond_type, [[latent.detach().float().cpu()]])
        masks.append(mask)
        refs.append(ref)
    return torch.cat(masks).to(x0.device), torch.cat(refs).to(x0.device, x0.dtype)
