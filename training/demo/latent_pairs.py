"""The file of generated latent pairs: what `generate-latents` writes and `train-vae
--generated-latents` reads.

Tensors `latent.<i>` (unscaled: what `vae.model.decode` takes, (C, T, h, w)) and metadata `specs`,
one ClipSpec per pair with its `start_step` (the sampler step the MMDiT denoised from).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

from opensora.errors import UserError
from opensora.io.atomic import save_safetensors_atomic
from training.demo.shapes_world import ClipSpec


@dataclass
class GeneratedPair:
    spec: ClipSpec
    latent: torch.Tensor  # (C, T, h, w), unscaled
    start_step: int


def write_pairs(pairs: list[GeneratedPair], out: str | Path) -> Path:
    tensors = {f"latent.{index}": pair.latent.contiguous() for index, pair in enumerate(pairs)}
    specs = [{**pair.spec.to_dict(), "start_step": pair.start_step} for pair in pairs]
    save_safetensors_atomic(tensors, Path(out), {"specs": json.dumps(specs)})
    return Path(out)


def load_pairs(path: str | Path) -> list[GeneratedPair]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no generated latents at {path}; make them with `python -m training generate-latents`")
    with safe_open(str(path), framework="pt") as f:
        rows = json.loads(f.metadata()["specs"])
        pairs = []
        for index, row in enumerate(rows):
            start_step = row.pop("start_step")
            pairs.append(GeneratedPair(ClipSpec(**row), f.get_tensor(f"latent.{index}"), start_step))
    return pairs
