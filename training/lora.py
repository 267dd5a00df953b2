"""LoRA on the MMDiT through peft: adapter config from the training settings, and the adapter
weights in and out in the LoRA file layout of `opensora.lora` (which `generate --lora` reads).
"""

from __future__ import annotations

from pathlib import Path

import torch
from peft import LoraConfig
from peft.tuners.lora import LoraLayer

from opensora.errors import UserError
from opensora.lora import lora_file_tensors
from training.config import LoraSettings

ADAPTER = "default"  # peft's adapter name; one adapter per training run


def add_lora(transformer, settings: LoraSettings) -> list[torch.nn.Parameter]:
    """Freeze the base model, add the adapter (B starts at zero: the model is unchanged at step 0)
    and return its parameters (float32 whatever the base's dtype)."""
    transformer.requires_grad_(False)
    config = LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules),
        init_lora_weights=True,
    )
    try:
        transformer.add_adapter(config, adapter_name=ADAPTER)
    except ValueError as err:  # peft: "Target modules {...} not found in the base model"
        raise UserError(f"lora.target_modules {settings.target_modules}: {err}") from None
    params = [p for p in transformer.parameters() if p.requires_grad]
    for param in params:  # float32 adapter on a bf16/fp16 base, as peft's autocast_adapter_dtype does
        param.data = param.data.float()
    if not params:
        raise UserError(f"lora.target_modules {settings.target_modules} matched no layer of the MMDiT")
    return params


def lora_layers(transformer) -> dict[str, LoraLayer]:
    return {name: module for name, module in transformer.named_modules() if isinstance(module, LoraLayer)}


def pairs_from_state_dict(state: dict[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """module name -> (A, B) from a model state dict holding peft's `<module>.lora_A.default.weight` keys."""
    suffix_a, suffix_b = f".lora_A.{ADAPTER}.weight", f".lora_B.{ADAPTER}.weight"
    pairs = {}
    for key, tensor in state.items():
        if key.endswith(suffix_a):
            module = key[: -len(suffix_a)]
            pairs[module] = (tensor, state[module + suffix_b])
    return pairs


def load_lora_pairs(transformer, pairs: dict[str, tuple[torch.Tensor, torch.Tensor]], source: Path) -> None:
    """Copy (A, B) pairs (e.g. from a checkpoint) into the adapter; every layer must be covered."""
    layers = lora_layers(transformer)
    if set(layers) != set(pairs):
        missing = sorted(set(layers) - set(pairs))[:5]
        extra = sorted(set(pairs) - set(layers))[:5]
        raise UserError(
            f"{source} does not match this run's LoRA layers (missing {missing}, unexpected {extra}); "
            "was it written with other lora.target_modules?"
        )
    with torch.no_grad():
        for name, (a, b) in pairs.items():
            layer = layers[name]
            a_param, b_param = layer.lora_A[ADAPTER].weight, layer.lora_B[ADAPTER].weight
            if a_param.shape != a.shape or b_param.shape != b.shape:
                raise UserError(
                    f"{source}: {name} has A{list(a.shape)} B{list(b.shape)}, this run's LoRA "
                    f"A{list(a_param.shape)} B{list(b_param.shape)}; was it written with another lora.rank?"
                )
            a_param.copy_(a)
            b_param.copy_(b)


def lora_output(
    pairs: dict[str, tuple[torch.Tensor, torch.Tensor]], settings: LoraSettings, preset_name: str, step: int
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors + metadata of the LoRA file `generate --lora` reads (opensora/lora.py)."""
    return lora_file_tensors(
        pairs, settings.rank, settings.alpha, settings.target_modules, preset_name, {"step": str(step)}
    )
