"""Uniform average of several weight files of one model ("model soup").

Runs that continue one another (the demo MMDiT's runs 29-32) end near each other in weight space;
their mean can sample better than any one of them (training/demo/HISTORY.md, "On one H100, a third time").
"""

from __future__ import annotations

import torch

from opensora.errors import UserError


def average_state_dicts(states: list[dict[str, torch.Tensor]], names: list[str]) -> dict[str, torch.Tensor]:
    """The elementwise mean of float tensors (computed in fp32, stored in the first file's dtype).
    Every file must hold the same keys and shapes; integer and bool tensors must be equal."""
    if len(states) < 2:
        raise UserError(f"average needs at least 2 weight files, got {len(states)}")
    first, first_name = states[0], names[0]
    for state, name in zip(states[1:], names[1:]):
        missing, extra = sorted(first.keys() - state.keys()), sorted(state.keys() - first.keys())
        if missing or extra:
            raise UserError(f"{name} does not match {first_name}: missing {missing[:3]}, extra {extra[:3]}")
        for key, tensor in state.items():
            if tensor.shape != first[key].shape:
                raise UserError(
                    f"{name}: {key} has shape {tuple(tensor.shape)}, {first_name} has {tuple(first[key].shape)}"
                )
    averaged = {}
    for key, tensor in first.items():
        if tensor.is_floating_point():
            total = sum(state[key].float() for state in states)
            averaged[key] = (total / len(states)).to(tensor.dtype)
        else:
            if not all(torch.equal(state[key], tensor) for state in states[1:]):
                raise UserError(f"{key} is not a float tensor and differs between the files: cannot average it")
            averaged[key] = tensor.clone()
    return averaged
