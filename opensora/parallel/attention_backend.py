"""`--attention sdpa|flash|flash3|sage|xformers|auto`: which kernel the MMDiT's attention runs on.

The kernels are diffusers' attention dispatcher backends; this module only maps our names onto
them, says clearly when one is not installed, and picks the default.
"""

import torch
from diffusers.models import attention_dispatch
from diffusers.models.attention_dispatch import AttentionBackendName

from opensora.errors import UserError

# Our name -> (diffusers backend, the pip package it needs, runs on a CPU).
BACKENDS = {
    "sdpa": (AttentionBackendName.NATIVE, "torch", True),
    "flash": (AttentionBackendName.FLASH, "flash-attn", False),
    "flash3": (AttentionBackendName._FLASH_3, "flash-attn 3 (built from source, Hopper GPUs)", False),
    "sage": (AttentionBackendName.SAGE, "sageattention", False),
    "xformers": (AttentionBackendName.XFORMERS, "xformers", False),
}
# `auto` tries these in order. sage is left out: it quantises q/k to int8, so its videos differ
# from the official numbers; ask for it by name.
AUTO_ORDER = ("flash3", "flash", "xformers", "sdpa")
HALF_PRECISION = (torch.bfloat16, torch.float16)


def _unusable_reason(name: str, device: torch.device, dtype: torch.dtype) -> str | None:
    backend, package, runs_on_cpu = BACKENDS[name]
    if device.type != "cuda" and not runs_on_cpu:
        return f"it runs on CUDA GPUs only (device here: {device})"
    if not runs_on_cpu and dtype not in HALF_PRECISION:
        return f"it needs bf16 or fp16 weights (dtype here: {str(dtype).removeprefix('torch.')})"
    try:
        attention_dispatch._check_attention_backend_requirements(backend)
    except RuntimeError:
        return f"{package} is not installed"
    return None


def installed_attention_backends(device="cpu", dtype: torch.dtype = torch.float32) -> list[str]:
    return [name for name in BACKENDS if _unusable_reason(name, torch.device(device), dtype) is None]


def resolve_attention_backend(name: str = "auto", device="cpu", dtype: torch.dtype = torch.float32) -> str:
    """Our backend name to use: `name` itself if it can run here, the fastest usable one for "auto"."""
    device = torch.device(device)
    if name == "auto":
        return next(n for n in AUTO_ORDER if _unusable_reason(n, device, dtype) is None)
    if name not in BACKENDS:
        raise UserError(f"unknown attention backend {name!r}; allowed: auto, {', '.join(BACKENDS)}")
    reason = _unusable_reason(name, device, dtype)
    if reason:
        usable = ", ".join(installed_attention_backends(device, dtype))
        raise UserError(f"attention backend {name!r} cannot be used: {reason}; usable here: {usable}")
    return name


def apply_attention_backend(transformer, name: str = "auto", device=None, dtype: torch.dtype | None = None) -> str:
    """Route every attention layer of `transformer` through the chosen backend; returns its name.

    Call it after `enable_sequence_parallel` (or any other processor change): it sets the backend
    on the processors the model holds at that moment.
    """
    parameter = next(transformer.parameters())
    device = parameter.device if device is None else torch.device(device)
    chosen = resolve_attention_backend(name, device, parameter.dtype if dtype is None else dtype)
    transformer.set_attention_backend(BACKENDS[chosen][0].value)
    return chosen
