"""Latents the MMDiT itself makes, each paired with the rendered clip it should decode to.

A training clip is encoded, noised to a step of the sampler's schedule and denoised from there by
the MMDiT with the clip's caption (SDEdit). The result keeps the clip's object, place and motion
but carries what the MMDiT leaves in its samples: specks of colour, small holes, rough outlines.
`train-vae --train decoder --generated-latents FILE` teaches the decoder to draw the rendered clip
from such latents. The encoder, its latents and the MMDiT stay as they are.

The file format is training/demo/latent_pairs.py. Pair i comes from `(seed, i)` alone.
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from opensora.errors import UserError
from opensora.pipeline import OpenSoraPipeline
from opensora.presets import Preset
from opensora.prompts import model_prompt
from opensora.refine.shapes_world import shapes_world_caption
from opensora.sampling.denoise import GuidanceOptions
from training.demo.clips import to_tensor
from training.demo.latent_pairs import GeneratedPair, write_pairs
from training.demo.shapes_world import DEFAULT_NUM_FRAMES, ClipSpec, render_clip, sample_spec

log = logging.getLogger(__name__)


def check_start_steps(first: int, last: int, num_steps: int) -> None:
    if not 0 <= first <= last < num_steps:
        raise UserError(f"start steps are {first}..{last}; allowed: 0 <= first <= last <= {num_steps - 1} "
                        f"(the preset's sampler takes {num_steps} steps)")


@torch.no_grad()
def generate_pair(pipe: OpenSoraPipeline, seed: int, index: int, first_step: int, last_step: int,
                  num_frames: int = DEFAULT_NUM_FRAMES) -> GeneratedPair:
    """Render a training clip of `num_frames`, noise its posterior mean to a start step drawn from
    first..last and let the MMDiT denoise the rest of the schedule (t2v, the preset's sampler settings)."""
    rng = np.random.default_rng([seed, index])
    spec = sample_spec(rng, held_out=False, num_frames=num_frames)
    start_step = int(rng.integers(first_step, last_step + 1))
    sampler = pipe.preset.sampler
    scale = pipe.vae.config.scale_factor

    mean, _ = pipe.vae.moments(to_tensor(render_clip(spec))[None].to(pipe.device, pipe.dtype))
    clean = mean * scale
    sigma = pipe.schedule(clean.shape, sampler.num_steps).sigmas[start_step].item()
    noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(seed * 100_003 + index)).to(clean)
    noisy = (1.0 - sigma) * clean + sigma * noise
    caption = shapes_world_caption(spec.colour, spec.shape, spec.motion, spec.background)
    txt, y_vec = pipe.text_encoder.encode([model_prompt(caption, sampler.fps, sampler.motion_score), "", ""])
    options = GuidanceOptions(sampler.guidance, sampler.guidance_img, sampler.text_osci, sampler.image_osci,
                              sampler.scale_temporal_osci)
    latent = pipe.sample(noisy, txt.to(clean), y_vec.to(clean), "t2v", [[]], options, sampler.num_steps,
                         start_step=start_step)
    return GeneratedPair(spec, (latent[0] / scale).float().cpu(), start_step)


def generate(pipe: OpenSoraPipeline, out: str | Path, num: int, seed: int, first_step: int, last_step: int,
             num_frames: int = DEFAULT_NUM_FRAMES) -> Path:
    """Write `num` pairs to the .safetensors file `out` (atomically)."""
    check_count(num)
    check_start_steps(first_step, last_step, pipe.preset.sampler.num_steps)
    started = time.perf_counter()
    pairs = []
    for index in range(num):
        pairs.append(generate_pair(pipe, seed, index, first_step, last_step, num_frames))
        log_progress(len(pairs), num, started)
    return write_pairs(pairs, out)


def generate_with_workers(preset: Preset, device: str, workers: int, out: str | Path, num: int, seed: int,
                          first_step: int, last_step: int, num_frames: int = DEFAULT_NUM_FRAMES) -> Path:
    """`generate` split over `workers` processes, each with its own pipeline on `device` (a GPU keeps
    several busy: one sampler alone leaves it mostly idle). Pair i still comes from (seed, i) alone."""
    check_count(num)
    if not 1 <= workers <= 64:
        raise UserError(f"workers is {workers}; allowed: 1-64")
    check_start_steps(first_step, last_step, preset.sampler.num_steps)
    started = time.perf_counter()
    chunks = [range(start, min(start + PAIRS_PER_TASK, num)) for start in range(0, num, PAIRS_PER_TASK)]
    pairs = []
    # spawn, not fork: CUDA cannot be used in a forked child.
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=load_worker_pipeline,
                             initargs=(preset, device)) as pool:
        for chunk in pool.map(worker_pairs, chunks, [(seed, first_step, last_step, num_frames)] * len(chunks)):
            for spec, latent, start_step in chunk:
                pairs.append(GeneratedPair(spec, torch.from_numpy(latent), start_step))
                log_progress(len(pairs), num, started)
    return write_pairs(pairs, out)


PAIRS_PER_TASK = 16
_worker_pipeline: OpenSoraPipeline | None = None


def load_worker_pipeline(preset: Preset, device: str) -> None:
    global _worker_pipeline
    torch.set_num_threads(1)  # the workers share the machine's cores
    _worker_pipeline = OpenSoraPipeline.from_preset(preset, device=device)


def worker_pairs(indices: range, settings: tuple[int, int, int, int]) -> list[tuple[ClipSpec, np.ndarray, int]]:
    seed, first_step, last_step, num_frames = settings
    pairs = [generate_pair(_worker_pipeline, seed, index, first_step, last_step, num_frames) for index in indices]
    return [(pair.spec, pair.latent.numpy(), pair.start_step) for pair in pairs]


def check_count(num: int) -> None:
    if num < 1:
        raise UserError(f"num is {num}; must be >= 1")


def log_progress(done: int, num: int, started: float) -> None:
    if done % 50 == 0:
        log.info("%d of %d pairs, %.2f s per pair", done, num, (time.perf_counter() - started) / done)
