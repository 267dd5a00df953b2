"""Training state <-> (safetensors tensors, JSON): optimizer, RNGs. Never pickle.

The optimizer state comes from torch.distributed.checkpoint's `get_optimizer_state_dict` (keyed
by parameter name, gathered to full tensors under FSDP), so it loads back into any wrapping.
"""

from __future__ import annotations

import random

import numpy as np
import torch

SEPARATOR = "/"  # between parameter name and state key; parameter names only contain dots


def flatten_optimizer_state(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """{"state": {param: {key: value}}, "param_groups": [...]} -> (tensors, JSON-able rest)."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict] = {}
    for param, values in state["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{param}{SEPARATOR}{key}"] = value.detach().cpu().clone().contiguous()
            else:
                scalars.setdefault(param, {})[key] = value
    groups = [{k: list(v) if isinstance(v, tuple) else v for k, v in group.items()} for group in state["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def unflatten_optimizer_state(tensors: dict[str, torch.Tensor], rest: dict) -> dict:
    state: dict[str, dict] = {param: dict(values) for param, values in rest.get("scalars", {}).items()}
    for name, tensor in tensors.items():
        param, key = name.rsplit(SEPARATOR, 1)
        state.setdefault(param, {})[key] = tensor
    groups = []
    for group in rest["param_groups"]:
        group = dict(group)
        if "betas" in group:  # AdamW keeps a tuple; JSON made it a list
            group["betas"] = tuple(group["betas"])
        groups.append(group)
    return {"state": state, "param_groups": groups}


def rng_state() -> tuple[dict[str, torch.Tensor], dict]:
    """The global RNGs of this process: torch (CPU and CUDA), numpy, python."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    tensors = {"torch": torch.get_rng_state(), "numpy_keys": torch.from_numpy(keys.astype(np.int64))}
    if torch.cuda.is_available():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = state
    version, internal, gauss_next = random.getstate()
    rest = {
        "numpy": {"kind": kind, "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(gauss)},
        "python": {"version": version, "state": list(internal), "gauss_next": gauss_next},
    }
    return tensors, rest


def set_rng_state(tensors: dict[str, torch.Tensor], rest: dict) -> None:
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[f"cuda.{i}"] for i in range(torch.cuda.device_count()) if f"cuda.{i}" in tensors]
    if cuda and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    n = rest["numpy"]
    keys = tensors["numpy_keys"].numpy().astype(np.uint32)
    np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))
    p = rest["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss_next"]))


def step_seed(seed: int, step: int, rank: int, micro_batch: int) -> int:
    """Seed of one micro-batch's random draws (timesteps, noise, cond types, caption dropout):
    a function of the position in training only, so a resumed run draws what the first run would."""
    return int(np.random.SeedSequence([seed, step, rank, micro_batch]).generate_state(1, dtype=np.uint64)[0] >> 1)
