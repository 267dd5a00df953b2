"""Official-layout MMDiT weights that look trained, for the tests of tools that reshape a model."""

import torch

from opensora.models.mmdit import build_mmdit
from opensora.models.mmdit_convert import diffusers_to_official


def trained_looking_weights(config, seed=1):
    """Random weights with non-zero output projections everywhere, like a trained model."""
    torch.manual_seed(seed)
    model = build_mmdit(config)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.05)
    return {k: v.contiguous() for k, v in diffusers_to_official(model.state_dict(), config).items()}
