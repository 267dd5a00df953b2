"""The official Open-Sora 1.2 rectified-flow sampler (RFLOW.sample, sampler_spec_v1_2.md 4-6).

N Euler steps from t = 1000 down to 0 on a schedule stretched by resolution and length, classifier-
free guidance against the model's learned null caption (cfg 7.0), and the mask path: frames with
mask 0 hold their reference latent and are seen with timestep 0; frames with 0 < mask < 1 stay at
the reference until t <= 1000 * mask, are then re-noised to that step's t and denoised.

Tensors in, tensors out: `sample_v1_2` takes the caption states, the reference latents, the noise
and the settings and returns the final latent (decode it with `VideoVAEV12.decode(latent, F)`).
"""

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from opensora.models.stdit3 import STDiT3
from opensora.models.vae_v1_2 import check_num_frames, latent_frames
from opensora.sampling.denoise import GenerationCancelled
from opensora.sampling.mask_strategy import OFFICIAL_ALIGN, apply_mask_strategy

NUM_TIMESTEPS = 1000
IMAGE_FPS = 120  # the fps the official inference passes for a single frame
BASE_RESOLUTION = 512 * 512

# callback(step_index, total_steps, latent_after_step)
StepCallback = Callable[[int, int, torch.Tensor], None]


@dataclass
class RFlowSettings:
    """One generation's sampler inputs that are not tensors (official defaults)."""

    height: int  # pixels, as requested (the latent is height // 8)
    width: int
    num_frames: int
    fps: int = 24
    num_steps: int = 30
    cfg_scale: float = 7.0
    use_timestep_transform: bool = True
    align: int | None = OFFICIAL_ALIGN  # mask-strategy snapping; None = positions as written

    @property
    def conditioning_fps(self) -> int:
        return self.fps if self.num_frames > 1 else IMAGE_FPS


def size_conditioning(settings: RFlowSettings, batch: int, device=None) -> dict[str, torch.Tensor]:
    """The model's fps/height/width and the transform's num_frames, (batch,) float32 tensors each."""
    def full(value):
        return torch.full((batch,), float(value), device=device)

    return dict(
        height=full(settings.height), width=full(settings.width), num_frames=full(settings.num_frames),
        fps=full(settings.conditioning_fps),
    )


def timestep_transform(t: torch.Tensor, height: torch.Tensor, width: torch.Tensor, num_frames: torch.Tensor) -> torch.Tensor:
    """t' = r t / (1 + (r - 1) t) on the 0..1 scale, r = sqrt(H W / 512^2) * sqrt(floor(F/17) * 5)
    (F = 1: sqrt(1)); float32 tensor arithmetic as the official code."""
    s = t / NUM_TIMESTEPS
    ratio_space = (height * width / BASE_RESOLUTION).sqrt()
    frames = torch.ones_like(num_frames) if num_frames[0] == 1 else num_frames // 17 * 5
    ratio = ratio_space * frames.sqrt()
    return ratio * s / (1 + (ratio - 1) * s) * NUM_TIMESTEPS


def timesteps_v1_2(settings: RFlowSettings, batch: int = 1, device=None) -> list[torch.Tensor]:
    """The N timesteps fed to the model, each (batch,) on the 0..1000 scale (no final 0)."""
    cond = size_conditioning(settings, batch, device)
    steps = []
    for i in range(settings.num_steps):
        t = torch.tensor([(1.0 - i / settings.num_steps) * NUM_TIMESTEPS] * batch, device=device)
        if settings.use_timestep_transform:
            t = timestep_transform(t, cond["height"], cond["width"], cond["num_frames"])
        steps.append(t)
    return steps


def add_noise(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    keep = (1 - t.float() / NUM_TIMESTEPS)[:, None, None, None, None]
    return keep * x0 + (1 - keep) * noise


def _randn_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    # Drawn on the CPU so a seed gives the same numbers on every device (the official draws from the
    # global RNG on the GPU; a CPU generator seeded s reproduces torch.manual_seed(s) on the CPU).
    return torch.randn(x.shape, generator=generator, dtype=torch.float32).to(x)


def denoise_v1_2(
    model: STDiT3,
    z: torch.Tensor,
    masks: torch.Tensor,
    y: torch.Tensor,
    y_mask: torch.Tensor,
    settings: RFlowSettings,
    y_null: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    callback: StepCallback | None = None,
    cancel_event=None,
) -> torch.Tensor:
    """The sampling loop. z (B,C,T,h,w) = noise with the reference frames written in; masks (B,T)
    float; y (B,1,L,D) caption states and y_mask (B,L) their token mask (also used for the null
    half, as the official model repeats it); y_null defaults to the model's learned null caption.
    `generator` feeds the per-step re-noising draws (one per step, used only where 0 < mask < 1)."""
    batch, channels = z.shape[:2]
    timesteps = timesteps_v1_2(settings, batch, z.device)
    cond = size_conditioning(settings, batch, z.device)
    y_null = model.null_caption(batch) if y_null is None else y_null
    y_both = torch.cat([y, y_null.to(y)])
    masks = masks.to(z.device)
    mask_t = masks * NUM_TIMESTEPS
    noise_added = masks == 1
    for i, t in enumerate(timesteps):
        if cancel_event is not None and cancel_event.is_set():
            raise GenerationCancelled(f"cancelled before step {i + 1} of {len(timesteps)}")
        x0 = z.clone()
        x_noise = add_noise(x0, _randn_like(x0, generator), t)
        upper = mask_t >= t[:, None]  # frames being generated at this t
        add = upper & ~noise_added
        z = torch.where(add[:, None, :, None, None], x_noise, x0)
        noise_added = upper

        out = model(
            torch.cat([z, z]), torch.cat([t, t]), y_both, y_mask, upper.repeat(2, 1),
            fps=cond["fps"], height=cond["height"], width=cond["width"],
        )
        v_cond, v_uncond = out[:, :channels].chunk(2, dim=0)
        velocity = v_uncond + settings.cfg_scale * (v_cond - v_uncond)
        dt = (timesteps[i] - timesteps[i + 1]) if i < len(timesteps) - 1 else timesteps[i]
        z = z + velocity * (dt / NUM_TIMESTEPS)[:, None, None, None, None]
        z = torch.where(upper[:, None, :, None, None], z, x0)
        if callback is not None:
            callback(i, len(timesteps), z)
    return z


def check_latent_frames(noise: torch.Tensor, num_frames: int) -> None:
    if noise.shape[2] != latent_frames(num_frames):
        raise ValueError(
            f"noise has {noise.shape[2]} latent frames; {num_frames} frames need {latent_frames(num_frames)}"
        )


def sample_v1_2(
    model: STDiT3,
    y: torch.Tensor,
    y_mask: torch.Tensor,
    noise: torch.Tensor,
    references: list[list[torch.Tensor]],
    mask_strategies: list[str],
    settings: RFlowSettings,
    generator: torch.Generator | None = None,
    y_null: torch.Tensor | None = None,
    callback: StepCallback | None = None,
    cancel_event=None,
    loop_i: int = 0,
) -> torch.Tensor:
    """One official generation, tensors in and out.

    y (B,1,L,D) / y_mask (B,L): T5 states and mask of the prompts (`t5_prompt` strings);
    noise (B,4,T,h,w) with T = latent_frames(F), h = H // 8, w = W // 8; references[b] the
    reference latents of item b (VideoVAEV12.encode of each file, (4,T_ref,h,w)); mask_strategies[b]
    its strategy string ("" = text-to-video; `cond_type_strategy` maps the app's cond types).
    Returns the final latent (B,4,T,h,w); reference frames with edit ratio 0 come back unchanged."""
    if settings.use_timestep_transform:
        check_num_frames(settings.num_frames)
    check_latent_frames(noise, settings.num_frames)
    if not math.isfinite(settings.cfg_scale) or settings.num_steps < 1:
        raise ValueError(f"bad sampler settings: {settings}")
    z, masks = apply_mask_strategy(noise, references, mask_strategies, loop_i, settings.align)
    return denoise_v1_2(model, z, masks, y, y_mask, settings, y_null, generator, callback, cancel_event)
