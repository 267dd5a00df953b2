"""What this machine offers a generation: the GPU's memory and the host RAM available now."""

import os
from pathlib import Path

GIB = 2**30


def gpu_memory_gib(device: str = "cuda") -> float | None:
    """Total memory of a CUDA device ("cuda" = the current one), None without CUDA."""
    import torch

    if not torch.cuda.is_available() or not str(device).startswith("cuda"):
        return None
    return torch.cuda.get_device_properties(torch.device(device)).total_memory / GIB


def available_ram_gib() -> float | None:
    """MemAvailable (Linux), else the machine's total."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024 / GIB
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB
    except (ValueError, OSError, AttributeError):
        return None
