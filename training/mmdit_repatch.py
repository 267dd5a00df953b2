"""Move a trained MMDiT onto another latent layout: new input and output projections, same blocks.

A VAE with another compression or a new patch size changes only how many numbers one image token
carries (`in_channels`). The projections that read and write those numbers (`img_in`, `cond_in`,
`final_layer.linear`) start fresh; every transformer block, the text, timestep and vector
embedders and the final modulation keep their trained weights, so training on the new latents
starts from what the model already knows about text, motion and time instead of from noise.
"""

from __future__ import annotations

from dataclasses import dataclass

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


# --------------------------------------------------------------------------- inheriting the projections
#
# When the old and the new VAE describe the same pixels (two block-mean VAEs, say), a token of one
# is close to a linear function of the other's. Fitting that map on real clips lets the new
# projections start as "translate, then do what the trained model did", instead of from noise.


@dataclass
class TokenMap:
    """old ≈ to_old @ new + to_old_bias and new ≈ to_new @ old + to_new_bias, over image tokens."""

    to_old: torch.Tensor  # (F_old, F_new)
    to_old_bias: torch.Tensor  # (F_old,)
    to_new: torch.Tensor  # (F_new, F_old)
    to_new_bias: torch.Tensor  # (F_new,)


def _least_squares(source: torch.Tensor, target: torch.Tensor, ridge: float) -> tuple[torch.Tensor, torch.Tensor]:
    """target ≈ source @ W.T + b for rows of (N, F_source) / (N, F_target), ridge-regularised."""
    mean_s, mean_t = source.mean(0), target.mean(0)
    s, t = (source - mean_s).double(), (target - mean_t).double()
    gram = s.T @ s + ridge * len(s) * torch.eye(s.shape[1], dtype=torch.float64)
    weight = torch.linalg.solve(gram, s.T @ t).T.float()
    return weight, mean_t - weight @ mean_s


def fit_token_map(old_tokens: torch.Tensor, new_tokens: torch.Tensor, ridge: float = 1e-4) -> TokenMap:
    """Fit both directions on paired tokens (N, F_old) / (N, F_new) of the same pixels."""
    if old_tokens.shape[0] != new_tokens.shape[0]:
        raise UserError(f"token counts differ ({old_tokens.shape[0]} old, {new_tokens.shape[0]} new): "
                        "both VAEs and patch sizes must give a token the same pixels")
    to_old, to_old_bias = _least_squares(new_tokens, old_tokens, ridge)
    to_new, to_new_bias = _least_squares(old_tokens, new_tokens, ridge)
    return TokenMap(to_old, to_old_bias, to_new, to_new_bias)


def _cond_to_old(token_map: TokenMap, old_channels: int, new_channels: int, old_patch: int, new_patch: int) -> torch.Tensor:
    """(F_cond_old, F_cond_new) map of the condition tokens [mask, masked reference latent].

    The mask is one value per latent frame (all ones where a reference frame is given), so each old
    mask entry reads the mean of the new mask entries; the reference maps like an image token, with
    its constant term carried by the mask (the reference is zero where the mask is).
    """
    mask_old, mask_new = old_patch * old_patch, new_patch * new_patch
    f_old, f_new = old_channels * mask_old, new_channels * mask_new
    out = torch.zeros(mask_old + f_old, mask_new + f_new)
    out[:mask_old, :mask_new] = 1.0 / mask_new
    out[mask_old:, mask_new:] = token_map.to_old
    out[mask_old:, :mask_new] = token_map.to_old_bias[:, None] / mask_new
    return out


def inherit_projections(state: dict[str, torch.Tensor], source: MMDiTConfig, target: MMDiTConfig,
                        token_map: TokenMap) -> dict[str, torch.Tensor]:
    """`repatch_projections`, with img_in, cond_in and final_layer.linear composed with the token map:
    the new model reads a token by translating it to the old layout first, and writes the old
    layout's output translated back."""
    out = repatch_projections(state, target)
    w_in, b_in = state["img_in.weight"].float(), state["img_in.bias"].float()
    out["img_in.weight"] = w_in @ token_map.to_old
    out["img_in.bias"] = b_in + w_in @ token_map.to_old_bias
    if "cond_in.weight" in state:
        cond_map = _cond_to_old(token_map, source.latent_channels, target.latent_channels, source.patch_size,
                                target.patch_size)
        out["cond_in.weight"] = state["cond_in.weight"].float() @ cond_map
    w_out, b_out = state["final_layer.linear.weight"].float(), state["final_layer.linear.bias"].float()
    # The input side reads the noisy latent through the affine map; a velocity is the difference of
    # two such latents (noise - x0), so it maps by the linear part alone.
    out["final_layer.linear.weight"] = token_map.to_new @ w_out
    out["final_layer.linear.bias"] = token_map.to_new @ b_out
    dtype = state["img_in.weight"].dtype
    return {k: v.to(dtype) for k, v in out.items()}
