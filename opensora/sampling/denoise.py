"""The official Open-Sora 2.0 denoising loop (I2VDenoiser): three-batch guidance with oscillation.

Each step runs the model once on a batch of three sub-batches:
  cond    = (prompt,   reference)
  uncond  = (negative, reference)
  uncond2 = (negative, no reference)
and combines v = v_u2 + g_img (v_u - v_u2) + g_txt (v_c - v_u). With oscillation on, odd steps
from 11 on use guidance 1.0; for i2v the image guidance also ramps along time, from 1.0 at the
first latent frame to a step-dependent value at the last.

The three sub-batches go through ONE model call per step: a step cache (opensora.sampling.step_cache)
then decides once per step for all three, so the guidance always combines outputs of the same step.
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch
from diffusers import FlowMatchEulerDiscreteScheduler

# model_fn(img, cond, txt, y_vec, timesteps, img_ids) -> velocity, all packed (see mmdit_forward).
ModelFn = Callable[..., torch.Tensor]
# callback(step_index, total_steps, packed_latent_after_step)
StepCallback = Callable[[int, int, torch.Tensor], None]
# prediction(step_index, total_steps, clean_latent): before each step; clean_latent() returns the packed
# x0 = x - sigma * velocity the step predicts (x_t = (1 - sigma) x0 + sigma noise, velocity = noise - x0),
# computed only when called: the live preview asks on a few steps, the others cost nothing.
PredictionCallback = Callable[[int, int, Callable[[], torch.Tensor]], None]


class GenerationCancelled(Exception):
    """Raised between steps when the caller's cancel event is set."""


@dataclass
class GuidanceOptions:
    guidance: float = 7.5  # text
    guidance_img: float = 3.0
    text_osci: bool = True
    image_osci: bool = True
    scale_temporal_osci: bool = True


def oscillate(value: float, step: int) -> float:
    """The official oscillation: guidance off (1.0) on odd steps from step 11 on."""
    return value if step < 10 or step % 2 == 0 else 1.0


def image_guidance_per_token(
    g_img: float, step: int, num_steps: int, latent_frames: int, tokens_per_frame: int
) -> torch.Tensor:
    """(1, N, 1) image guidance ramping along time from 1.0 (first frame) to a step-dependent end."""
    end = torch.linspace(g_img, 1.0, num_steps + 1)[step]
    per_frame = torch.linspace(1.0, end.item(), latent_frames)
    return per_frame.repeat_interleave(tokens_per_frame)[None, :, None]


def denoise(
    model_fn: ModelFn,
    noise: torch.Tensor,
    cond: torch.Tensor | None,
    txt: torch.Tensor,
    y_vec: torch.Tensor,
    img_ids: torch.Tensor,
    scheduler: FlowMatchEulerDiscreteScheduler,
    options: GuidanceOptions,
    temporal_ramp: bool,
    latent_frames: int,
    callback: StepCallback | None = None,
    cancel_event=None,
    start_step: int = 0,
    prediction: PredictionCallback | None = None,
) -> torch.Tensor:
    """Integrate from t=1 to 0. noise (B, N, F) packed; cond (B, N, Fc) or None; txt / y_vec hold
    3B rows ordered [prompts, negatives, negatives]. `temporal_ramp` is the official
    `scale_temporal_osci and "i2v" in cond_type`. Returns the packed latent (B, N, F).

    With `start_step` k > 0 only the steps from k on run, as the last steps of a full run would
    (SDEdit): `noise` is then a latent already noised to the schedule's sigma k. `prediction`, when
    given, hears the clean latent each step predicts (before `callback` hears the step's result)."""
    batch, num_tokens, _ = noise.shape
    tokens_per_frame = num_tokens // latent_frames
    cond_batch = None if cond is None else torch.cat([cond, cond, torch.zeros_like(cond)])
    sigmas = scheduler.sigmas
    num_steps = len(scheduler.timesteps)
    x = noise
    for i, timestep in enumerate(scheduler.timesteps):
        if i < start_step:
            continue
        if cancel_event is not None and cancel_event.is_set():
            raise GenerationCancelled(f"cancelled before step {i + 1} of {num_steps}")
        t = torch.full((3 * batch,), sigmas[i].item(), dtype=x.dtype, device=x.device)
        out = model_fn(torch.cat([x, x, x]), cond_batch, txt, y_vec, t, img_ids)
        v_cond, v_uncond, v_uncond2 = out.chunk(3, dim=0)

        g_txt = oscillate(options.guidance, i) if options.text_osci else options.guidance
        g_img = oscillate(options.guidance_img, i) if options.image_osci else options.guidance_img
        if g_img > 1.0 and temporal_ramp:
            g_img = image_guidance_per_token(g_img, i, num_steps, latent_frames, tokens_per_frame).to(x)
        velocity = v_uncond2 + g_img * (v_uncond - v_uncond2) + g_txt * (v_cond - v_uncond)
        if prediction is not None:  # the defaults bind this step's tensors (x is rebound by the step)
            prediction(i, num_steps, lambda x=x, velocity=velocity, sigma=sigmas[i].item(): x - sigma * velocity)

        x = scheduler.step(velocity, timestep, x, return_dict=False)[0]
        if callback is not None:
            callback(i, num_steps, x)
    return x
