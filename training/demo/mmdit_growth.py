"""Deepen a trained MMDiT: append single-stream blocks that start as the identity.

A new block gets fresh random weights except its output projection (`linear2`), which is zero.
The block then adds nothing to the residual stream, so the grown network computes exactly what
the smaller one did and training continues from there with more depth to use.
"""

from __future__ import annotations

import torch

from opensora.errors import UserError
from opensora.models.mmdit import MMDiTConfig, build_mmdit
from opensora.models.mmdit_convert import diffusers_to_official


def count_single_blocks(state: dict[str, torch.Tensor]) -> int:
    indices = {int(key.split(".")[1]) for key in state if key.startswith("single_blocks.")}
    return max(indices) + 1 if indices else 0


def grow_single_blocks(state: dict[str, torch.Tensor], target: MMDiTConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """Official-layout weights of a smaller MMDiT -> weights for `target` (more single blocks).

    Everything but the number of single blocks must match `target`; the new blocks come last.
    """
    have, want = count_single_blocks(state), target.depth_single_blocks
    if want <= have:
        raise UserError(f"the target has {want} single blocks and the weights already have {have}: "
                        f"growing needs more than {have}")
    torch.manual_seed(seed)
    fresh = diffusers_to_official(build_mmdit(target).state_dict(), target)
    for key, tensor in state.items():
        if key not in fresh or fresh[key].shape != tensor.shape:
            expected = tuple(fresh[key].shape) if key in fresh else "no such key"
            raise UserError(f"weight {key} {tuple(tensor.shape)} does not fit the target MMDiT "
                            f"(expected {expected}): only depth_single_blocks may differ")
    grown = {}
    for key, tensor in fresh.items():
        if key in state:
            grown[key] = state[key]
        elif key.startswith("single_blocks.") and ".linear2." in key:
            grown[key] = torch.zeros_like(tensor)
        elif key.startswith("single_blocks."):
            grown[key] = tensor
        else:
            raise UserError(f"the weights lack {key}, which is not part of a new single block")
    return grown
