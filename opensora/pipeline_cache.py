"""One loaded pipeline per process: loaded on first use, kept, replaced on a preset switch.

Loading the official model takes minutes and most of the GPU, so there is never more than one:
switching presets drops the old pipeline (and frees its memory) before the new one loads. The
CLI and the app both generate through it (`opensora.runner`).

How it runs on this machine is its `RuntimeOptions` (device, dtype, memory profile, T5 quantisation,
fp8 weights, attention kernel): changing them reloads the pipeline on the next job. Open-Sora 2.0
pipelines load on the CPU, get the job's LoRAs merged, and are then placed for the memory profile
(`OpenSoraPipeline.place`, on their first generation).
"""

from __future__ import annotations

import gc
import threading
from dataclasses import dataclass, replace
from pathlib import Path

from opensora.devices import check_device
from opensora.errors import UserError
from opensora.generation_settings import LoraChoice
from opensora.presets import FAMILY_V1_2, Preset


def free_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@dataclass(frozen=True)
class RuntimeOptions:
    """How pipelines run here, not what they make (that is `GenerationSettings`). T5 quantisation and
    fp8 weights change the numbers slightly: each video's sidecar records these (`runtime`)."""

    device: str | None = None  # None: cuda when available, else cpu
    dtype: str | None = None  # None: bf16 on a GPU, fp32 on a CPU
    offload: str = "auto"  # a memory profile of presets/profiles/memory.toml; auto: the fastest that fits each job
    offload_dir: str | None = None  # the disk profile's block files (None: a temporary folder)
    text_encoder_quant: str | None = None  # None, "int8" or "nf4" (T5 through bitsandbytes)
    fp8_mmdit: bool = False  # MMDiT weights stored in fp8, computed in the dtype
    attention: str = "auto"  # sdpa, flash, flash3, sage, xformers; auto: the fastest installed


def check_runtime_supported(preset: Preset, options: RuntimeOptions, ranks: int = 1) -> None:
    """What `options` cannot do for `preset`, refused before it loads: T5 quantisation of random
    encoders; for Open-Sora 1.2 (for now) anything but everything on one device."""
    from opensora.loading import check_quant_applies

    check_quant_applies(preset, options.text_encoder_quant)
    if preset.family != FAMILY_V1_2:
        return
    if ranks > 1:
        raise UserError(f"sequence parallelism over {ranks} processes is for Open-Sora 2.0 presets; "
                        f"{preset.name} is {preset.family_name}: run it with --no-parallel (one process)")
    asked = [f"--offload {options.offload}" if options.offload not in ("auto", "none") else "",
             f"--text-encoder-quant {options.text_encoder_quant}" if options.text_encoder_quant else "",
             "--fp8-mmdit" if options.fp8_mmdit else "",
             f"--attention {options.attention}" if options.attention not in ("auto", "sdpa") else ""]
    asked = [a for a in asked if a]
    if asked:
        raise UserError(f"{', '.join(asked)}: offload profiles, quantised encoders, fp8 weights and attention "
                        f"backends are not supported for {preset.family_name} presets ({preset.name}) yet; "
                        "use --offload none or auto")


def pipeline_class(preset: Preset):
    """The pipeline of the preset's family (both have from_preset / generate / load_lora)."""
    if preset.family == FAMILY_V1_2:
        from opensora.pipeline_v1_2 import OpenSoraV12Pipeline

        return OpenSoraV12Pipeline
    from opensora.pipeline import OpenSoraPipeline

    return OpenSoraPipeline


class PipelineCache:
    def __init__(self, ckpt_dir: Path | str, device: str | None = None, dtype: str | None = None,
                 options: RuntimeOptions | None = None):
        """device / dtype: shorthands for the options' own (they win)."""
        self.ckpt_dir = Path(ckpt_dir)
        options = options or RuntimeOptions()
        self.options = replace(options, device=device or options.device, dtype=dtype or options.dtype)
        self._pipe = None
        self._key: tuple[Path, RuntimeOptions] | None = None  # preset file + options (offload resolved) loaded
        self._loras: list[tuple[str, float]] = []  # (path, scale) merged now, in order
        self._lock = threading.Lock()  # one load / generation at a time, whatever the queue does

    @property
    def options(self) -> RuntimeOptions:
        return self._options

    @options.setter
    def options(self, options: RuntimeOptions) -> None:
        """New options take effect on the next `get` (a reload when the loaded pipeline differs)."""
        device, dtype = check_device(options.device, options.dtype)
        self._options = replace(options, device=device, dtype=dtype)

    @property
    def device(self) -> str:
        return self._options.device

    @property
    def dtype(self) -> str:
        return self._options.dtype

    @property
    def lock(self) -> threading.Lock:
        return self._lock

    @property
    def loaded(self) -> str | None:
        return None if self._pipe is None else self._pipe.preset.name

    def get(self, preset: Preset, on_load=None, profiles: list[str] | None = None,
            loras: list[LoraChoice] | None = None):
        """The pipeline for `preset`, loading it (and unloading another) when needed.
        Call with `lock` held. `on_load(message)` is told before a (slow) load starts.

        profiles: the memory profiles that fit the job, fastest first (`opensora.runner.check_job_fits`);
        a loaded pipeline whose profile is among them is kept. loras: the job's LoRAs; a pipeline placed
        where its weights cannot be edited (offload hooks, fp8) is reloaded to merge other ones."""
        if self._pipe is not None and self._reusable(preset, profiles, loras):
            return self._pipe
        self.unload()
        check_runtime_supported(preset, self._options)
        requested = self._options.offload
        profile = requested if requested != "auto" else (profiles or ["none"])[0]
        options = replace(self._options, offload=profile)
        if on_load:
            on_load(f"loading {preset.name} on {self.device}" + (f" (memory profile {profile})" if profile != "none" else ""))
        cls = pipeline_class(preset)
        if preset.family == FAMILY_V1_2:
            self._pipe = cls.from_preset(preset, self.ckpt_dir, self.device, self.dtype)
        else:
            self._pipe = cls.from_preset(preset, self.ckpt_dir, self.device, self.dtype, runtime=options)
        self._key = (preset.path, options)
        return self._pipe

    def _reusable(self, preset: Preset, profiles: list[str] | None, loras: list[LoraChoice] | None) -> bool:
        path, loaded = self._key
        if path != preset.path or replace(loaded, offload=self._options.offload) != self._options:
            return False
        requested = self._options.offload
        allowed = [requested] if requested != "auto" else profiles
        if allowed is not None and loaded.offload not in allowed:
            return False
        wanted = None if loras is None else [(str(c.path), float(c.scale)) for c in loras]
        return wanted is None or wanted == self._loras or getattr(self._pipe, "weights_editable", True)

    def unload(self) -> None:
        if self._pipe is None:
            return
        close = getattr(self._pipe, "close", None)
        if close is not None:
            close()  # e.g. the disk profile's block files
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
