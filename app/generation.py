"""One generation for the UI: settings -> checked -> prompt prepared -> pipeline -> numbered mp4s.

Mirrors `opensora/commands/generate.py` step for step (check before loading, `prepare_prompt`,
`pipe(...)`, `OutputWriter.write` with the prompt handling in the sidecar) so a video made in the
app and one made with the CLI carry the same settings. No Gradio here: the handlers wrap it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from opensora.errors import UserError


@dataclass
class GenerationRequest:
    preset: str
    prompt: str
    negative_prompt: str = ""
    cond_type: str = "t2v"
    reference: list[str] = field(default_factory=list)  # image/video paths for the non-t2v types
    num_frames: int | None = None
    resolution: str | None = None
    aspect_ratio: str | None = None
    num_steps: int | None = None
    guidance: float | None = None
    guidance_img: float | None = None
    motion_score: int | str | None = None  # 1-15 or "dynamic"; None: preset default
    seed: int | None = None  # None: random, reported in the result
    num_samples: int = 1
    refine: bool = False
    lora: str | None = None
    lora_scale: float = 1.0


@dataclass
class GenerationOutput:
    paths: list[Path]
    settings: list[dict]
    notices: list[str]
    seconds: float

    @property
    def seed(self) -> int:
        return self.settings[0]["seed"]


def check_request(request: GenerationRequest, ckpt_dir: Path):
    """Fail on bad settings before spending seconds or minutes loading the model (as the CLI)."""
    from app.presets_info import check_selectable
    from opensora.generation import check_settings

    preset = check_selectable(request.preset, ckpt_dir)
    request.cond_type = check_settings(
        preset, request.prompt, request.cond_type, list(request.reference), request.num_frames,
        request.resolution, request.aspect_ratio, motion_score=request.motion_score,
    )
    if request.lora and not Path(request.lora).is_file():
        raise UserError(f"LoRA file {request.lora} does not exist")
    return preset


def run_generation(cache, request: GenerationRequest, output_dir: Path, progress, cancel_event) -> GenerationOutput:
    """Generate and write `request.num_samples` videos. `progress` is an `app.progress.StepProgress`
    (or anything with `message(text)` and `(step, total, latent)`); `cancel_event` stops it
    between steps (GenerationCancelled)."""
    from opensora.generation import write_videos
    from opensora.io.outputs import OutputWriter
    from opensora.refine import RefineSettings, prepare_prompt
    from opensora.sampling.denoise import GenerationCancelled

    started = time.time()
    preset = check_request(request, cache.ckpt_dir)
    motion = request.motion_score if request.motion_score is not None else preset.sampler.motion_score
    progress.message("preparing the prompt")
    prepared = prepare_prompt(
        request.prompt, refine=request.refine, motion_score=motion,
        mode="t2v" if request.cond_type == "t2v" else "t2i", settings=RefineSettings.from_env(),
        shapes_world=preset.name == "demo", fps=preset.sampler.fps,
    )
    with cache.lock:
        if cancel_event.is_set():  # cancelled while waiting in the queue
            raise GenerationCancelled("cancelled before it started")
        pipe = cache.get(preset.name, on_load=progress.message)
        cache.apply_lora(pipe, request.lora, request.lora_scale)
        progress.message("encoding the prompt")
        progress.begin(request.num_samples)
        result = pipe(
            prepared.text, negative_prompt=request.negative_prompt, cond_type=request.cond_type,
            reference=list(request.reference) or None, num_frames=request.num_frames,
            resolution=request.resolution, aspect_ratio=request.aspect_ratio, num_steps=request.num_steps,
            guidance=request.guidance, guidance_img=request.guidance_img,
            motion_score=prepared.motion_score, seed=request.seed, num_samples=request.num_samples,
            callback=progress, cancel_event=cancel_event,
        )
        del pipe  # the cache owns the pipeline; no stray reference may outlive a preset switch
    progress.message("writing the video")
    paths = write_videos(OutputWriter(output_dir), result, prepared, request.prompt)
    return GenerationOutput(paths, result.settings, prepared.notices, round(time.time() - started, 2))


def estimate_gpu_seconds(request: GenerationRequest) -> int:
    """A generous upper bound for ZeroGPU's `duration`: load + steps x samples x latent tokens."""
    from app.presets_info import preset as load

    try:
        p = load(request.preset)
        frames = request.num_frames or p.sampler.num_frames
        h, w = p.image_size(request.resolution or p.sampler.resolution, request.aspect_ratio or p.sampler.aspect_ratio)
        steps = request.num_steps or p.sampler.num_steps
    except UserError:
        return 60  # the request fails its checks in a second anyway
    tokens = (frames // 4 + 1) * (h // 16) * (w // 16)
    return int(min(900, 30 + steps * request.num_samples * tokens * 1e-4))
