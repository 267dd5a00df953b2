"""Which device and dtype a generation runs on: one default, one check of a user's choice."""

from __future__ import annotations

import torch

from opensora.errors import UserError

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def parse_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise UserError(f"unknown dtype {name!r}; allowed: {', '.join(DTYPES)}")
    return DTYPES[name]


def dtype_name(dtype: torch.dtype) -> str:
    return next(name for name, value in DTYPES.items() if value == dtype)


def default_device() -> tuple[str, str]:
    """(device, dtype name): the GPU in bf16 when there is one, else the CPU in fp32."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return device, "bf16" if device == "cuda" else "fp32"


def check_device(name: str | None, dtype: str | None = None) -> tuple[str, str]:
    """(device, dtype name) from the user's choices (None: the defaults), checked before any load."""
    default, default_dtype = default_device()
    device = name or default
    kind, _, index = device.partition(":")
    if kind not in ("cpu", "cuda") or (index and (kind == "cpu" or not index.isdigit())):
        raise UserError(f"device {device!r} is not supported: use cpu, cuda or cuda:N")
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"device {device!r}: no CUDA GPU is usable here (torch {torch.__version__}); use --device cpu")
        if index and int(index) >= torch.cuda.device_count():
            raise UserError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA devices (0-based)")
    chosen = dtype or (default_dtype if device == default else ("bf16" if kind == "cuda" else "fp32"))
    parse_dtype(chosen)
    return device, chosen
