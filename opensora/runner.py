"""The one job runner: resolved settings -> prompt prepared -> pipeline -> videos written.

`python -m opensora generate` (prompts and CSV rows), the app's Generate buttons and its Reuse all
end here, so a video made anywhere carries the same sidecar:

    settings = resolve_settings(GenerationRequest(prompt="a cat"), preset)   # checked, nothing loaded
    result = run_job(preset, settings, PipelineCache("ckpts"), "outputs")
    result.paths  # [outputs/0000.mp4]
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

from opensora.errors import UserError
from opensora.generation_settings import GenerationSettings
from opensora.presets import FAMILY_V2, Preset


class Progress(Protocol):
    def message(self, text: str) -> None: ...

    def begin(self, num_samples: int) -> None: ...

    def __call__(self, step: int, total: int, latent) -> None: ...

    # Optional: `preview`, None or a callable(frames (t, h, w, 3) uint8, frame_seconds) that gets the
    # predicted clean video every few steps (opensora/preview/live.py); without it none is made.


class SilentProgress:
    def message(self, text: str) -> None:
        pass

    def begin(self, num_samples: int) -> None:
        pass

    def __call__(self, step: int, total: int, latent=None) -> None:
        pass


@dataclass
class JobResult:
    paths: list[Path]
    sidecars: list[dict]
    notices: list[str]
    seconds: float
    images: list[Path | None] = field(default_factory=list)  # each video's FLUX first frame (NNNN.png), if any

    @property
    def seeds(self) -> list[int]:
        return [s["seed"] for s in self.sidecars]


def settings_notices(settings: GenerationSettings, preset: Preset) -> list[str]:
    """What the user should know about settings that are allowed but unusual."""
    from opensora.generation_settings_v1_2 import placement_notices

    notices = placement_notices(settings, preset)  # Open-Sora 1.2's align=5 quirk (none for 2.0)
    trained = preset.limits.trained_frames
    if trained is not None and settings.num_frames > trained:
        notices.append(f"{settings.num_frames} frames is past the {trained} frames preset {preset.name} was trained "
                       "on: expect a broken or black video")
    if settings.reference and settings.cond_type.startswith("i2v"):
        from opensora.io.reference import reference_size

        for path in dict.fromkeys(settings.reference):
            h, w = reference_size(path)
            if abs(h / w - settings.height / settings.width) > 0.01 * settings.height / settings.width:
                notices.append(f"the reference {Path(path).name} ({w}x{h}) is scaled and centre-cropped to "
                               f"{settings.width}x{settings.height} ({settings.aspect_ratio})")
    return notices


def run_job(
    preset: Preset,
    settings: GenerationSettings,
    pipelines,
    output_dir: Path | str,
    progress: Progress | None = None,
    cancel_event=None,
    refine_settings=None,
    record: dict | None = None,
) -> JobResult:
    """Generate and write the videos of `settings` (resolved for `preset`). `pipelines` is an
    `opensora.pipeline_cache.PipelineCache`; its lock is held while the model runs. `progress`
    hears messages and steps; `cancel_event` stops between steps (GenerationCancelled). `record`
    is added to every sidecar (the queue's job id)."""
    from opensora.io.outputs import OutputWriter, copy_reference, image_path_of

    started = time.time()
    progress = progress or SilentProgress()
    profiles = check_job_fits(settings, preset, pipelines.options, pipelines.ckpt_dir)
    writer = OutputWriter(output_dir)
    writer.check_writable()
    notices = settings_notices(settings, preset)
    # References are kept beside the videos: uploads live in temp folders that get cleaned.
    settings = replace(settings, reference=[copy_reference(p, writer.output_dir) for p in settings.reference])
    result = generate_videos(preset, settings, pipelines, progress, cancel_event, refine_settings, profiles, notices)
    progress.message("writing the video")
    images = result.images or [None] * len(result.videos)  # text -> image -> video first frames
    for sidecar in result.settings:
        sidecar.update(record or {})
    paths = [writer.write(video, sidecar["fps"], sidecar, text=sidecar["prompt"], seed=sidecar["seed"], image=image)
             for video, sidecar, image in zip(result.videos, result.settings, images)]
    written = [None if image is None else image_path_of(path) for path, image in zip(paths, images)]
    return JobResult(paths, result.settings, notices, round(time.time() - started, 2), written)


def generate_videos(preset: Preset, settings: GenerationSettings, pipelines, progress: Progress, cancel_event,
                    refine_settings, profiles: list[str] | None, notices: list[str]):
    """`run_job`'s model half, nothing written (also each part of `opensora.extend`): the prompt prepared,
    the pipeline from the cache (its lock held), the videos made -> the pipeline's GenerationResult.
    `profiles`: from `check_job_fits`; the prompt's notices are added to `notices`."""
    from opensora.generation_settings_v1_2 import prompt_motion_score
    from opensora.parallel.jobs import announce_job, end_job
    from opensora.preview.live import preview_callback
    from opensora.refine import RefineSettings, prepare_prompt
    from opensora.sampling.denoise import GenerationCancelled

    progress.message("preparing the prompt")
    prepared = prepare_prompt(
        settings.prompt, refine=settings.refine, motion_score=prompt_motion_score(settings),
        # The official script refines i2v jobs, and t2i2v's video prompt (it becomes i2v_head), as "t2i".
        mode="t2v" if settings.cond_type == "t2v" and not settings.use_t2i2v else "t2i",
        settings=refine_settings or RefineSettings.from_env(), vocabulary=preset.prompt.vocabulary, fps=settings.fps,
    )
    notices += prepared.notices
    with pipelines.lock:
        if cancel_event is not None and cancel_event.is_set():  # cancelled while waiting for the model
            raise GenerationCancelled("cancelled before it started")
        announce_job(preset, pipelines.options, profiles, settings.loras)  # other torchrun ranks follow
        try:
            pipe = pipelines.get(preset, on_load=progress.message, profiles=profiles, loras=settings.loras)
            pipelines.apply_loras(pipe, settings.loras)
            progress.message("encoding the prompt")
            progress.begin(settings.num_samples)
            callback = preview_callback(preset, progress, settings, notices)  # progress, + live previews
            result = pipe.generate(settings, prepared, callback=callback, cancel_event=cancel_event,
                                   on_message=progress.message)
            notices += result.notices  # e.g. how long --compile took
            del pipe  # the cache owns the pipeline; no stray reference may outlive a preset switch
        finally:
            end_job()
    return result


def check_job_fits(settings: GenerationSettings, preset: Preset, options, ckpt_dir=None) -> list[str] | None:
    """The memory profiles that can run the job on this machine, fastest first: the requested one, or
    for `auto` every one the memory planner says fits the GPU and RAM here (`options`: the pipeline
    cache's RuntimeOptions). Checked before anything loads (see `job_fit`); None for a preset the
    planner does not cover yet (it runs profile none)."""
    image = None
    if settings.use_t2i2v:
        from opensora.t2i2v import image_size

        image = image_size(preset, settings)
    fit = job_fit(preset, options, settings.num_frames, settings.height, settings.width, settings.num_samples,
                  ckpt_dir, t2i2v_image=image)
    return None if fit is None else fit.profiles


def job_fit(preset: Preset, options, num_frames: int, height: int, width: int, num_samples: int = 1,
            ckpt_dir=None, t2i2v_image: tuple[int, int] | None = None):
    """The memory planner's `Fit` of a job of this size (opensora.memory.fit; `t2i2v_image`: the FLUX
    first frame's (height, width)), after checking what `options` cannot do here (an unknown profile,
    a kernel not installed, ...). A UserError names what would fit when nothing does. Presets the
    planner does not cover yet (Open-Sora 1.2) get None, and a plain size limit on the CPU."""
    from opensora.checkpoints import checkpoint_root
    from opensora.memory.fit import fit_job, machine_limits, plan_request, planner_covers
    from opensora.memory.profiles import memory_profile
    from opensora.models.text_encoders import check_text_encoder_quant
    from opensora.parallel.process_group import world_size
    from opensora.pipeline_cache import check_runtime_supported

    if options.offload != "auto":
        memory_profile(options.offload)  # an unknown name lists the allowed ones
    check_text_encoder_quant(options.text_encoder_quant)
    check_runtime_supported(preset, options, world_size())
    if preset.family == FAMILY_V2:
        from opensora.devices import parse_dtype
        from opensora.loading import check_files
        from opensora.parallel.attention_backend import resolve_attention_backend

        check_files(preset, ckpt_dir)  # a missing or wrong file is the first thing to say
        resolve_attention_backend(options.attention, options.device, parse_dtype(options.dtype))
    if not planner_covers(preset):
        _check_cpu_size(num_frames, height, width, options.device)
        return None
    request = plan_request(
        preset, num_frames, height, width, num_samples, device=options.device, dtype=options.dtype,
        text_encoder_quant=options.text_encoder_quant, fp8_mmdit=options.fp8_mmdit,
        ckpt_root=checkpoint_root(preset, ckpt_dir), ranks=world_size(), t2i2v_image=t2i2v_image,
    )
    return fit_job(request, options.offload, *machine_limits(options.device))


def _check_cpu_size(num_frames: int, height: int, width: int, device: str) -> None:
    """Where the planner does not reach: a plain size limit on the CPU, so a huge request fails in a
    second instead of filling the RAM after minutes."""
    if not device.startswith("cpu"):
        return
    pixels = num_frames * height * width  # samples run one after another
    if pixels > CPU_MAX_PIXELS:
        raise UserError(
            f"{num_frames} frames of {width}x{height} "
            f"({pixels / 1e6:.0f} M pixels) is too large for a CPU run; the limit is {CPU_MAX_PIXELS / 1e6:.0f} M "
            "pixels (fewer frames, a smaller size, or a GPU)"
        )


CPU_MAX_PIXELS = 129 * 512 * 512  # a 768px x 129 frames video would need tens of GB in the VAE decode
