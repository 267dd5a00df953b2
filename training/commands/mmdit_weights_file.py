"""Reading a trained MMDiT file for the commands that reshape or average them (grow-mmdit, repatch-mmdit,
average-weights)."""

from __future__ import annotations

import torch

from opensora.errors import UserError


def read_mmdit_weights(path: str) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(path)
    except (FileNotFoundError, SafetensorError) as err:
        raise UserError(f"cannot read MMDiT weights {path}: {err}") from None
