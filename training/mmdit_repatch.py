"""Move a trained MMDiT onto another latent layout: new input and output projections, same blocks.

A VAE with another compression or a new patch size changes only how many numbers one image token
carries (`in_channels`). The projections that read and write those numbers (`img_in`, `cond_in`,
`final_layer.linear`) start fresh; every transformer block, the text, timestep and vector
embedders and the final modulation keep their trained weights, so training on the new latents
starts from what the model already knows about text, motion and time instead of from noise.
"""

from __future__ import annotations

import torch

from opensora.errors import UserError
from opensora.models.mmdit import MMDiTConfig, build_mmdit
from opensora.models.mmdit_convert import diffusers_to_official

TOKEN_PROJECTIONS = ("img_in.", "cond_in.", "final_layer.linear.")


def repatch_projections(state: dict[str, torch.Tensor], target: MMDiTConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """Official-layout weights -> weights for `target`, whose token size may differ.

    Everything else (width, depth, heads, text widths) must match `target`.
    """
    torch.manual_seed(seed)
    fresh = diffusers_to_official(build_mmdit(target).state_dict(), target)
    missing = sorted(set(fresh) - set(state))
    extra = sorted(set(state) - set(fresh))
    if missing or extra:
        raise UserError(f"the weights do not have the target MMDiT's layers (missing {missing[:3]}, "
                        f"unexpected {extra[:3]}): only in_channels or patch_size may differ")
    out = {}
    for key, tensor in fresh.items():
        if state[key].shape == tensor.shape:
            out[key] = state[key]
        elif key.startswith(TOKEN_PROJECTIONS):
            out[key] = tensor.to(state[key].dtype)
        else:
            raise UserError(f"weight {key} {tuple(state[key].shape)} does not fit the target MMDiT "
                            f"(expected {tuple(tensor.shape)}): only in_channels or patch_size may differ")
    return out
