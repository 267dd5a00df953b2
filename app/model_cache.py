"""One loaded pipeline for the whole app: loaded on first use, kept, replaced on preset switch.

Loading the official model takes minutes and most of the GPU, so there is never more than one:
switching presets drops the old pipeline (and frees its memory) before the new one loads.
"""

from __future__ import annotations

import gc
import threading
from pathlib import Path


def default_device() -> tuple[str, str]:
    """(device, dtype) exactly as `python -m opensora generate` picks them."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    return device, "bf16" if device == "cuda" else "fp32"


def free_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class PipelineCache:
    def __init__(self, ckpt_dir: Path, device: str | None = None, dtype: str | None = None):
        self.ckpt_dir = ckpt_dir
        self._device, self._dtype = device, dtype
        self._pipe = None
        self._key: str | None = None  # the preset name (or TOML path) the pipeline was loaded from
        self._lora: tuple[str, float] | None = None  # (path, scale) currently applied
        self._lock = threading.Lock()  # one load / generation at a time, whatever the queue does

    @property
    def lock(self) -> threading.Lock:
        return self._lock

    @property
    def loaded(self) -> str | None:
        return self._key

    def get(self, preset_name: str, on_load=None):
        """The pipeline for `preset_name`, loading it (and unloading another) when needed.
        Call with `lock` held. `on_load(message)` is told before a (slow) load starts."""
        if self._pipe is not None and self._key == preset_name:
            return self._pipe
        self.unload()
        from opensora.pipeline import OpenSoraPipeline

        if self._device is None:
            self._device, self._dtype = default_device()
        if on_load:
            on_load(f"loading {preset_name} on {self._device}")
        self._pipe = OpenSoraPipeline.from_preset(preset_name, self.ckpt_dir, self._device, self._dtype)
        self._key = preset_name
        return self._pipe

    def unload(self) -> None:
        if self._pipe is None:
            return
        self._pipe, self._key, self._lora = None, None, None
        free_memory()

    def apply_lora(self, pipe, lora: str | None, scale: float) -> None:
        """Keep exactly the requested LoRA loaded (none when `lora` is empty)."""
        wanted = (str(lora), float(scale)) if lora else None
        if wanted == self._lora:
            return
        if self._lora is not None:
            pipe.unload_loras()
            self._lora = None
        if wanted is not None:
            load_lora = getattr(pipe, "load_lora", None)
            if load_lora is None:
                from opensora.errors import UserError

                raise UserError("this version of the pipeline cannot load LoRAs yet (no load_lora)")
            load_lora(wanted[0], wanted[1])
            self._lora = wanted
