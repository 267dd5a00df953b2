"""One loaded pipeline per process: loaded on first use, kept, replaced on a preset switch.

Loading the official model takes minutes and most of the GPU, so there is never more than one:
switching presets drops the old pipeline (and frees its memory) before the new one loads. The
CLI and the app both generate through it (`opensora.runner`).
"""

from __future__ import annotations

import gc
import threading
from pathlib import Path

from opensora.devices import check_device
from opensora.generation_settings import LoraChoice
from opensora.presets import FAMILY_V1_2, Preset


def free_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def pipeline_class(preset: Preset):
    """The pipeline of the preset's family (both have from_preset / generate / load_lora)."""
    if preset.family == FAMILY_V1_2:
        from opensora.pipeline_v1_2 import OpenSoraV12Pipeline

        return OpenSoraV12Pipeline
    from opensora.pipeline import OpenSoraPipeline

    return OpenSoraPipeline


class PipelineCache:
    def __init__(self, ckpt_dir: Path | str, device: str | None = None, dtype: str | None = None):
        self.ckpt_dir = Path(ckpt_dir)
        self.device, self.dtype = check_device(device, dtype)
        self._pipe = None
        self._key: Path | None = None  # the preset file the pipeline was loaded from
        self._loras: list[tuple[str, float]] = []  # (path, scale) merged now, in order
        self._lock = threading.Lock()  # one load / generation at a time, whatever the queue does

    @property
    def lock(self) -> threading.Lock:
        return self._lock

    @property
    def loaded(self) -> str | None:
        return None if self._pipe is None else self._pipe.preset.name

    def get(self, preset: Preset, on_load=None):
        """The pipeline for `preset`, loading it (and unloading another) when needed.
        Call with `lock` held. `on_load(message)` is told before a (slow) load starts."""
        if self._pipe is not None and self._key == preset.path:
            return self._pipe
        self.unload()
        if on_load:
            on_load(f"loading {preset.name} on {self.device}")
        self._pipe = pipeline_class(preset).from_preset(preset, self.ckpt_dir, self.device, self.dtype)
        self._key = preset.path
        return self._pipe

    def unload(self) -> None:
        if self._pipe is None:
            return
        self._pipe, self._key, self._loras = None, None, []
        free_memory()

    def apply_loras(self, pipe, loras: list[LoraChoice]) -> None:
        """Keep exactly the requested LoRAs merged (none for an empty list)."""
        wanted = [(str(c.path), float(c.scale)) for c in loras]
        if wanted == self._loras:
            return
        if self._loras:
            pipe.unload_loras()
            self._loras = []
        for path, scale in wanted:
            pipe.load_lora(path, scale)
        self._loras = wanted
