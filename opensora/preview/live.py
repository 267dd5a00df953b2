"""Preview frames from the sampler's predicted clean latents, for the runner's progress object.

Each step the sampler hears from the model a velocity v, and the clean video it currently predicts
is x0 = x - sigma v (flow matching: x_t = (1 - sigma) x0 + sigma noise, v = noise - x0; see
`opensora.sampling.denoise`, its `prediction` hook, which computes x0 only when asked). Every few
steps that x0 is projected to RGB
with the VAE's fitted linear map (opensora/preview/projection.py) at latent resolution, one latent
frame per preview frame: no VAE decode. A progress object with a `preview` hook (a callable
taking frames and frame_seconds) gets the frames; one without it costs nothing.

Why not x0 from two consecutive latents: on a GPU the latents are bf16, and their difference over
one step (divided by the step's small sigma change) is mostly rounding: 8-13 dB against the exact
x0 half-way through a 50-step demo run, where the step's own velocity is exact.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from opensora.errors import UserError
from opensora.presets import FAMILY_V2
from opensora.preview.fit import project
from opensora.preview.projection import PreviewProjection, load_projection, preview_data_name, preview_data_path

log = logging.getLogger(__name__)

PREVIEWS_PER_VIDEO = 10  # 50 steps: one every 5; the cost per step is measured by bench/preview.py
_REPORTED_MISSING: set[str] = set()  # preview data names already reported missing (once per process)


def preview_every(num_steps: int) -> int:
    return max(1, round(num_steps / PREVIEWS_PER_VIDEO))


def is_preview_step(step: int, num_steps: int, every: int) -> bool:
    """Step index `step` gets a preview: every `every` steps, and the last."""
    return (step + 1) % every == 0 or step == num_steps - 1


def frames_of(pixels: torch.Tensor) -> np.ndarray:
    """(3, t, h, w) in [-1, 1] -> (t, h, w, 3) uint8."""
    return ((pixels + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 3, 0).contiguous().cpu().numpy()


class LatentPreview:
    """Call with (step, total, clean_latent), clean_latent() returning x0 (B, C, t, h, w); returns the
    (t, h, w, 3) uint8 preview of the first video on preview steps (every `every`, None:
    `preview_every(total)`), else None without asking for x0."""

    def __init__(self, projection: PreviewProjection, every: int | None = None):
        self.weights = torch.tensor(projection.weights)
        self.bias = torch.tensor(projection.bias)
        self.every = every

    def __call__(self, step: int, total: int, clean_latent) -> np.ndarray | None:
        if not is_preview_step(step, total, self.every or preview_every(total)):
            return None
        return frames_of(project(clean_latent()[0], self.weights, self.bias))


class PreviewingCallback:
    """The step callback the runner hands the pipeline: each step goes to `progress`; on preview steps
    the step's predicted clean latent (`prediction`, heard just before the step) becomes frames sent to
    `progress.preview(frames, frame_seconds)` right after that step's progress."""

    def __init__(self, progress, preview: LatentPreview, frame_seconds: float):
        self.progress, self.live, self.frame_seconds = progress, preview, frame_seconds
        self._frames = None

    def prediction(self, step: int, total: int, clean_latent) -> None:
        self._frames = self.live(step, total, clean_latent)

    def __call__(self, step: int, total: int, latent=None) -> None:
        self.progress(step, total, latent)
        frames, self._frames = self._frames, None
        if frames is not None:
            self.progress.preview(frames, self.frame_seconds)


def preview_callback(preset, progress, settings, notices: list[str]):
    """The step callback for `pipe.generate(settings, ...)`: `progress` itself, or, when it has a
    `preview` hook and the preset's VAE has preview data, a PreviewingCallback around it (a latent
    frame lasts time_compression video frames). No data, or a sampler without predictions, turns the
    preview off with a notice in `notices`, once per process."""
    if getattr(progress, "preview", None) is None:
        return progress
    projection = load_projection(preset) if preset.family == FAMILY_V2 else None
    if projection is None:
        name = preview_data_name(preset)
        if name not in _REPORTED_MISSING:
            _REPORTED_MISSING.add(name)
            notice = missing_notice(preset)
            log.info(notice)
            notices.append(notice)
        return progress
    if projection.latent_channels != preset.vae.latent_channels:
        raise UserError(f"preview data {preview_data_path(preset)} has {projection.latent_channels} rows; the VAE of "
                        f"preset {preset.name} has {preset.vae.latent_channels} latent channels (re-fit it with "
                        f"`python -m opensora fit-preview --preset {preset.name}`)")
    return PreviewingCallback(progress, LatentPreview(projection), preset.vae.time_compression / settings.fps)


def missing_notice(preset) -> str:
    if preset.family != FAMILY_V2:
        return f"live preview off: the {preset.family_name} sampler has no preview"
    return (f"live preview off: no latent -> RGB preview data for the VAE of preset {preset.name} "
            f"(presets/preview/{preview_data_path(preset).name}); "
            f"`python -m opensora fit-preview --preset {preset.name}` makes it where the VAE weights are")
