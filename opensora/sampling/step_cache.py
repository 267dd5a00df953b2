"""Step caching for one video: diffusers' cache hooks on the MMDiT, on for exactly one sample.

    with StepCache(transformer, spec, num_steps, mag_ratios) as cache:
        latent = denoise(cache.watch(model_fn), ...)
    # the hooks are gone again: nothing carries over into the next video

Steps-aware guidance: the sampler runs cond / uncond / uncond2 as ONE batch of three rows in one
forward per step (`opensora.sampling.denoise`), under one cache context. Each hook decides once per
forward for the whole batch, so a skipped step reuses all three rows from the same earlier step and
the guidance always combines outputs of one step. FasterCache's own guidance shortcut is the
exception: it splits the batch into an [uncond, cond] pair, which three rows are not, so only its
attention part runs (`is_guidance_distilled=True`).
"""

from __future__ import annotations

import ast
import io
import logging
from contextlib import contextmanager, redirect_stdout

import torch
from diffusers.hooks import (
    FasterCacheConfig, FirstBlockCacheConfig, MagCacheConfig, PyramidAttentionBroadcastConfig, TaylorSeerCacheConfig,
)

from opensora.sampling.cache_spec import CacheSpec

CONTEXT = "video"  # one cache context per sample: all three guidance rows share its state


class StepCache:
    """Enables `spec` on `transformer` for one denoising loop (no-op for spec None)."""

    def __init__(self, transformer, spec: CacheSpec | None, num_steps: int, mag_ratios: list[float] | None = None):
        self.transformer, self.spec = transformer, spec
        self.timestep = 1000.0  # of the step running now, for the hooks that skip by timestep (0-1000)
        self.config = None if spec is None else hook_config(spec, num_steps, mag_ratios, self._current_timestep)
        self._context = None

    def _current_timestep(self) -> float:
        return self.timestep

    def watch(self, model_fn):
        """`model_fn` that tells the hooks the current timestep (flow time x 1000) before each forward."""
        if self.config is None:
            return model_fn

        def watched(img, cond, txt, y_vec, timesteps, img_ids):
            self.timestep = float(timesteps[0]) * 1000.0
            return model_fn(img, cond, txt, y_vec, timesteps, img_ids)

        return watched

    def __enter__(self) -> "StepCache":
        if self.config is not None:
            self.transformer.enable_cache(self.config)
            self._context = self.transformer.cache_context(CONTEXT)
            self._context.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.config is None:
            return
        try:
            self._context.__exit__(*exc)
        finally:
            self.transformer.disable_cache()  # removes every hook and its state


def hook_config(spec: CacheSpec, num_steps: int, mag_ratios: list[float] | None, current_timestep):
    """The diffusers config of a parsed spec (see `opensora.sampling.cache_spec` for the names)."""
    if spec.method == "first-block":
        return FirstBlockCacheConfig(threshold=spec["threshold"])
    if spec.method == "taylorseer":
        return TaylorSeerCacheConfig(
            cache_interval=int(spec["interval"]), disable_cache_before_step=int(spec["warmup"]),
            max_order=int(spec["order"]), use_lite_mode=bool(spec["lite"]),
            taylor_factors_dtype=torch.float32,  # bf16 factors cost precision and save nothing on these sizes
        )
    if spec.method == "magcache":
        if mag_ratios is None:
            raise ValueError("magcache needs the preset's calibrated ratios")
        return MagCacheConfig(
            threshold=spec["threshold"], max_skip_steps=int(spec["max-skip"]), retention_ratio=spec["retention"],
            num_inference_steps=num_steps, mag_ratios=list(mag_ratios),
        )
    if spec.method == "pab":
        return PyramidAttentionBroadcastConfig(
            spatial_attention_block_skip_range=int(spec["every"]),
            spatial_attention_timestep_skip_range=(spec["tmin"], spec["tmax"]),
            current_timestep_callback=current_timestep,
        )
    if spec.method == "fastercache":
        weight = spec["weight"]
        return FasterCacheConfig(
            spatial_attention_block_skip_range=int(spec["every"]),
            spatial_attention_timestep_skip_range=(spec["tmin"], spec["tmax"]),
            attention_weight_callback=lambda _module: weight,
            current_timestep_callback=current_timestep,
            is_guidance_distilled=True,  # see the module docstring: no [uncond, cond] batch split
        )
    raise ValueError(f"unknown cache method {spec.method}")


class _CalibrationResults(logging.Handler):
    """Collects the ratios MagCache logs at the end of each calibration run."""

    PREFIX = "MagCache Calibration Results:"

    def __init__(self, runs: list[list[float]]):
        super().__init__(logging.INFO)
        self.runs = runs

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith(self.PREFIX):
            self.runs.append([float(r) for r in ast.literal_eval(message[len(self.PREFIX):].strip())])


@contextmanager
def magcache_calibration(transformer, num_steps: int):
    """MagCache in calibration mode (nothing skipped) on `transformer`; yields the list that each run
    of `num_steps` steps appends its per-step ratios to (norm(residual_t) / norm(residual_t-1))."""
    runs: list[list[float]] = []
    handler = _CalibrationResults(runs)
    logger = logging.getLogger("diffusers.hooks.mag_cache")
    level, propagate = logger.level, logger.propagate
    transformer.enable_cache(MagCacheConfig(calibrate=True, num_inference_steps=num_steps))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # the results come here, not as log lines
    try:
        with redirect_stdout(io.StringIO()):  # the hook also prints them, for copy-pasting
            yield runs
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate
        transformer.disable_cache()


def has_cache_hooks(transformer) -> bool:
    """Whether any diffusers hook is left on the transformer or one of its modules."""
    return transformer.is_cache_enabled or any(
        getattr(module, "_diffusers_hook", None) is not None and module._diffusers_hook.hooks
        for module in transformer.modules()
    )
