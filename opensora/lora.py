"""LoRA files: reading, checking against a model, and merging into its weights.

A LoRA file is safetensors with one low-rank pair per adapted linear layer of the MMDiT, named as
diffusers names LoRA weights of a transformer::

    transformer.<module>.lora_A.weight   (rank, in_features)
    transformer.<module>.lora_B.weight   (out_features, rank)

`<module>` is the layer's name in diffusers' `FluxTransformer2DModel` (e.g.
`transformer_blocks.0.attn.to_q`). The metadata holds `format`, `rank`, `alpha`,
`target_modules` (JSON list) and `preset`. A layer's weight becomes W + scale * (alpha / r) * B @ A.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

from opensora.errors import UserError, listing
from opensora.io.outputs import save_safetensors_atomic

LORA_FORMAT = "opensora-studio-lora/1"
KEY_PREFIX = "transformer."
SCALE_RANGE = (-10.0, 10.0)


@dataclass
class LoraFile:
    path: Path
    rank: int
    alpha: float
    target_modules: list[str]
    preset: str
    pairs: dict[str, tuple[torch.Tensor, torch.Tensor]]  # module name -> (A, B)

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank


def parse_lora_spec(spec: str) -> tuple[Path, float]:
    """"FILE" or "FILE:SCALE" -> (path, scale). A path that exists as given wins over the split,
    so file names with a colon still work."""
    if Path(spec).is_file():
        return Path(spec), 1.0
    path_text, sep, scale_text = spec.rpartition(":")
    if not sep:
        raise UserError(f"LoRA file {spec} does not exist")
    try:
        scale = float(scale_text)
    except ValueError:
        if Path(path_text).is_file():
            raise UserError(
                f"LoRA scale {scale_text!r} in {spec!r} is not a number; "
                f"use FILE:SCALE with SCALE from {SCALE_RANGE[0]:g} to {SCALE_RANGE[1]:g}"
            ) from None
        raise UserError(f"LoRA file {spec} does not exist") from None
    if not Path(path_text).is_file():
        raise UserError(f"LoRA file {path_text} does not exist")
    check_scale(scale, spec)
    return Path(path_text), scale


def check_scale(scale: float, where: str = "") -> float:
    low, high = SCALE_RANGE
    if not math.isfinite(scale) or not low <= scale <= high:
        raise UserError(f"LoRA scale {scale!r}{f' in {where!r}' if where else ''} is out of range: allowed {low:g} to {high:g}")
    return scale


def read_lora_file(path: str | Path) -> LoraFile:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"LoRA file {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as err:  # safetensors raises several types for bad headers
        raise UserError(f"{path} is not a readable safetensors file: {err}") from None
    if metadata.get("format") != LORA_FORMAT:
        raise UserError(
            f"{path} is not an Open-Sora Studio LoRA (metadata format {metadata.get('format')!r}, "
            f"expected {LORA_FORMAT!r}); LoRAs come from `python -m training finetune`"
        )
    try:
        rank, alpha = int(metadata["rank"]), float(metadata["alpha"])
        targets = json.loads(metadata.get("target_modules", "[]"))
    except (KeyError, ValueError) as err:
        raise UserError(f"{path}: bad LoRA metadata ({err}); needs integer rank and numeric alpha") from None
    pairs = pairs_from_file_tensors(tensors, path)
    if rank < 1:
        raise UserError(f"{path}: LoRA rank {rank} must be >= 1")
    return LoraFile(path, rank, alpha, list(targets), metadata.get("preset", "?"), pairs)


def lora_preset(path: str | Path) -> str | None:
    """The preset a LoRA file was trained for, from its metadata only (no tensor is read); None when
    the file is not a readable Open-Sora Studio LoRA."""
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except Exception:  # noqa: BLE001 - safetensors raises several types for bad headers
        return None
    return metadata.get("preset") if metadata.get("format") == LORA_FORMAT else None


def pairs_from_file_tensors(tensors: dict[str, torch.Tensor], path: Path) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """module name -> (A, B) from the tensors of a LoRA file (`path` names it in errors)."""
    modules: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        for part in ("lora_A", "lora_B"):
            suffix = f".{part}.weight"
            if key.startswith(KEY_PREFIX) and key.endswith(suffix):
                modules.setdefault(key[len(KEY_PREFIX) : -len(suffix)], {})[part] = tensor
                break
        else:
            raise UserError(f"{path}: unexpected key {key!r}; expected transformer.<module>.lora_A/lora_B.weight")
    incomplete = [m for m, parts in modules.items() if len(parts) != 2]
    if incomplete:
        raise UserError(f"{path}: modules without both lora_A and lora_B: {listing(incomplete)}")
    if not modules:
        raise UserError(f"{path} holds no LoRA weights")
    return {m: (parts["lora_A"], parts["lora_B"]) for m, parts in modules.items()}


def lora_file_tensors(
    pairs: dict[str, tuple[torch.Tensor, torch.Tensor]],
    rank: int,
    alpha: float,
    target_modules: list[str],
    preset: str,
    extra_metadata: dict[str, str] | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and metadata of a LoRA file (float32, on the CPU)."""
    tensors = {}
    for module, (a, b) in sorted(pairs.items()):
        tensors[f"{KEY_PREFIX}{module}.lora_A.weight"] = a.detach().float().cpu().contiguous()
        tensors[f"{KEY_PREFIX}{module}.lora_B.weight"] = b.detach().float().cpu().contiguous()
    metadata = {
        "format": LORA_FORMAT,
        "rank": str(rank),
        "alpha": repr(float(alpha)),
        "target_modules": json.dumps(list(target_modules)),
        "preset": preset,
        **(extra_metadata or {}),
    }
    return tensors, metadata


def write_lora_file(
    path: str | Path,
    pairs: dict[str, tuple[torch.Tensor, torch.Tensor]],
    rank: int,
    alpha: float,
    target_modules: list[str],
    preset: str,
    extra_metadata: dict[str, str] | None = None,
) -> Path:
    """Write atomically (temp file in the same folder, then rename): readers never see half a file."""
    tensors, metadata = lora_file_tensors(pairs, rank, alpha, target_modules, preset, extra_metadata)
    return save_safetensors_atomic(tensors, path, metadata)


def check_lora_fits(lora: LoraFile, model: torch.nn.Module, preset_name: str) -> None:
    """Every module of the LoRA exists in `model` as a Linear with matching in/out sizes; otherwise
    one line naming the preset the LoRA was made for (the module list would only bury that)."""
    layers = dict(model.named_modules())
    misfits = []
    for module, (a, b) in lora.pairs.items():
        layer = layers.get(module)
        if not isinstance(layer, torch.nn.Linear) or a.shape[1] != layer.in_features or b.shape != (layer.out_features, a.shape[0]):
            misfits.append(module)
    if not misfits:
        return
    advice = (f"pick a LoRA trained on {preset_name}, or switch the preset to {lora.preset}"
              if lora.preset not in ("?", preset_name) else "use the preset the LoRA was trained with")
    raise UserError(
        f"LoRA {lora.path} (made for preset {lora.preset}) does not fit preset {preset_name}: "
        f"{len(misfits)} of {len(lora.pairs)} adapted layers are missing or of another size "
        f"(first: {sorted(misfits)[0]}); {advice}"
    )


def lora_delta(a: torch.Tensor, b: torch.Tensor, scaling: float, scale: float) -> torch.Tensor:
    """scale * (alpha / r) * B @ A, in float32."""
    return (scale * scaling) * (b.float() @ a.float())


def check_lora_choice(path: str | Path, scale: float, preset_name: str) -> None:
    """Before any model loads: the file is a readable LoRA made for `preset_name`, the scale in range."""
    check_scale(scale, str(path))
    lora = read_lora_file(path)
    if lora.preset not in (preset_name, "?"):
        raise UserError(f"LoRA {path} (made for preset {lora.preset}) does not fit preset {preset_name}: "
                        f"switch the preset to {lora.preset}, or pick a LoRA made for {preset_name}")
