"""Hugging Face ZeroGPU support: `@spaces.GPU` around GPU-bound calls when `spaces` is installed.

On a ZeroGPU Space the decorator attaches a GPU for the call, for at most `duration` seconds
(a function of the call's arguments, so short jobs queue with priority); elsewhere the `spaces`
package is absent (or the decorator is a no-op) and the function runs as is.
"""

import os
from typing import Callable


def on_zero_gpu() -> bool:
    """Running on a ZeroGPU Space (the `spaces` package may be installed anywhere; it sets this)."""
    return os.environ.get("SPACES_ZERO_GPU", "").lower() in ("1", "true")


def gpu_task(duration: Callable[..., int]):
    """Decorator: `spaces.GPU(duration=duration)` if available, else the identity."""
    try:
        import spaces
    except ImportError:
        return lambda fn: fn
    return spaces.GPU(duration=duration)


def estimate_gpu_seconds(preset, settings) -> int:
    """A generous upper bound for ZeroGPU's `duration`: load + steps x samples x latent tokens."""
    unit = preset.spatial_unit
    tokens = preset.vae.latent_frames(settings.num_frames) * (settings.height // unit) * (settings.width // unit)
    return int(min(900, 30 + settings.num_steps * settings.num_samples * tokens * 1e-4))
