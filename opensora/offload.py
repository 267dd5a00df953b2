"""Apply a memory profile (presets/profiles/memory.toml) to a pipeline's three components.

    offload = apply_offload(pipe, "group", "cuda")      # pipe: anything with .transformer/.vae/.text_encoder
    with offload.encode():  txt, y_vec = pipe.text_encoder.encode(...)
    with offload.sample():  latent = pipe.sample(...)
    with offload.decode():  video = pipe.vae.decode(latent)
    offload.close()                                     # removes the disk-offload files

Placements: "resident" modules go to the device once; "swap" modules live in host RAM and enter the
device only inside their phase; "group" / "leaf" / "disk" modules get diffusers' group-offload hooks,
which move blocks (or layers) in and out by themselves during the forward pass.
"""

import ctypes
import gc
import shutil
import sys
import tempfile
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch
from diffusers.hooks import apply_group_offloading
from torch import nn

from opensora.errors import UserError
from opensora.memory.profiles import MemoryProfile, memory_profile

HOST = torch.device("cpu")
FP8_STORAGE = torch.float8_e4m3fn


def _glibc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (musl): nothing to tune
        return None


def release_memory(device: torch.device) -> None:
    """Give freed memory back (run between phases and generations, so RSS does not creep up):
    the GPU allocator's cache, and glibc's free heap pages (malloc_trim)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


def return_freed_blocks_to_os() -> None:
    """Fix glibc's mmap threshold at 1 MiB, so every weight-sized allocation is its own mapping and
    is unmapped when freed. Left dynamic, glibc raises the threshold after the first large free and
    serves the next blocks from a heap that never shrinks: disk offload would keep about one block
    more resident than it needs (measured +138 MiB on the mid-size CPU config)."""
    libc = _glibc()
    if libc is not None:
        m_mmap_threshold = -3
        libc.mallopt(m_mmap_threshold, 1 << 20)


def enable_fp8_storage(transformer) -> None:
    """MMDiT weights stored in fp8 (e4m3), each layer cast back to its current dtype (bf16 on a GPU)
    for its own forward: half the bf16 weight memory. Norms and embeddings stay as they are."""
    if not hasattr(transformer, "enable_layerwise_casting"):  # a plain torch model: Open-Sora 1.2's STDiT3
        raise UserError(f"fp8 weight storage needs a diffusers model (the Open-Sora 2.0 MMDiT); "
                        f"{type(transformer).__name__} does not support it yet")
    compute = next(transformer.parameters()).dtype
    transformer.enable_layerwise_casting(storage_dtype=FP8_STORAGE, compute_dtype=compute)


def _hf_models(text_encoder: nn.Module) -> list[nn.Module]:
    """The separately offloadable encoders inside a TextConditioner (T5 and CLIP)."""
    return [m for m in (getattr(text_encoder, "t5", None), getattr(text_encoder, "clip", None)) if m is not None]


class Offload:
    """Where each component lives under `profile`; the phase context managers move "swap" modules."""

    def __init__(self, components, profile: MemoryProfile, device, offload_dir: str | Path | None = None):
        self.profile, self.device = profile, torch.device(device)
        self.transformer, self.vae, self.text_encoder = components.transformer, components.vae, components.text_encoder
        self.offload_dir: Path | None = None
        self._own_dir = False
        if profile.mmdit == "disk":
            return_freed_blocks_to_os()
            self._own_dir = offload_dir is None
            self.offload_dir = Path(offload_dir or tempfile.mkdtemp(prefix="opensora-offload-"))
            self.offload_dir.mkdir(parents=True, exist_ok=True)
        self._swapped: set[int] = set()
        self._place(self.text_encoder, profile.encoders, "encoders")
        self._place(self.transformer, profile.mmdit, "mmdit")
        self._place(self.vae, profile.vae, "vae")
        if hasattr(self.vae, "set_temporal_tiling"):
            self.vae.set_temporal_tiling(profile.vae_temporal_tiling)
        release_memory(self.device)

    def _place(self, module: nn.Module, placement: str, part: str) -> None:
        if placement == "resident":
            module.to(self.device)
        elif placement == "swap":
            module.to(HOST)
            self._swapped.add(id(module))
        else:  # hooks: the module stays in host RAM (or on disk) and diffusers moves its pieces
            module.to(HOST)
            targets = _hf_models(module) if part == "encoders" else [module]
            for target in targets:
                self._hook(target, placement)

    def _hook(self, module: nn.Module, placement: str) -> None:
        on_gpu = self.device.type == "cuda"
        if placement == "leaf":
            apply_group_offloading(module, self.device, HOST, offload_type="leaf_level", use_stream=on_gpu)
        else:
            apply_group_offloading(
                module, self.device, HOST, offload_type="block_level", num_blocks_per_group=1, use_stream=on_gpu,
                # Prefetching needs pinned host copies; with disk offload they are made per block instead.
                low_cpu_mem_usage=placement == "disk",
                offload_to_disk_path=str(self.offload_dir) if placement == "disk" else None,
            )

    @contextmanager
    def on_device(self, module: nn.Module):
        """`module` on the device for the duration of the block (a no-op unless it is swapped)."""
        if id(module) not in self._swapped or self.device == HOST:
            yield module
            return
        module.to(self.device)
        try:
            yield module
        finally:
            module.to(HOST)
            release_memory(self.device)

    def encode(self):
        return self.on_device(self.text_encoder)

    def sample(self):
        return self.on_device(self.transformer)

    def decode(self):
        return self.on_device(self.vae)

    def close(self) -> None:
        """Delete the disk-offload files this object made (the MMDiT cannot run after that)."""
        if self._own_dir and self.offload_dir is not None:
            shutil.rmtree(self.offload_dir, ignore_errors=True)
            self.offload_dir = None


def apply_offload(
    components, profile: str | MemoryProfile, device="cpu", *, offload_dir: str | Path | None = None, fp8_mmdit: bool = False
) -> Offload:
    """Place `components` (.transformer, .vae, .text_encoder, e.g. an OpenSoraPipeline) for `profile`.

    Call once, after loading and LoRA merging, before the first generation. fp8_mmdit: store the
    MMDiT in fp8 (layerwise casting), applied before the offload hooks so blocks travel in fp8.
    """
    profile = memory_profile(profile) if isinstance(profile, str) else profile
    if fp8_mmdit:
        enable_fp8_storage(components.transformer)
    return Offload(components, profile, device, offload_dir)


def phase_context(offload: Offload | None, phase: str):
    """`offload.encode()` / `.sample()` / `.decode()`, or nothing when no profile was applied."""
    return nullcontext() if offload is None else getattr(offload, phase)()
