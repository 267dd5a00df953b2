"""Extend a video into a longer one: parts made with `v2v_head`, each continuing the video so far.

    plan = plan_extension("outputs/0003.mp4", GenerationRequest(prompt="..."), seconds=8, preset=preset)
    result = run_extension(plan, preset, PipelineCache("ckpts"), "outputs")   # one NNNN.mp4 + NNNN.json

The official extension path: `v2v_head` keeps its reference's first 33 frames (9 latent frames) and
generates after them. Each part's reference is the last 33 frames of the video so far (kept as a clip
in OUTPUT_DIR/references/); the part's frames after its first 33 are appended. The source's own frames
are kept as they are (resized only when the source is not at the parts' size). The sidecar is the first
part's record plus `extension`: the source (copied into references/), the frame rule and every part's
settings, so `plan_from_sidecar` remakes the video frame for frame.

Frames per part: the preset's default frame count when it is above 33, else its `limits.max_frames`
(the demo: 65, so 32 new frames a part); the last part is cut to the fewest latent frames that reach
the requested length (4 frames each, so a video can end up to 3 frames longer than asked).
"""

from __future__ import annotations

import math
import random
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from opensora.errors import UserError
from opensora.generation_settings import SEED_MAX, GenerationRequest, check_frames, resolve_settings
from opensora.presets import FAMILY_V2, Preset
from opensora.sampling.conditioning import reference_spec

COND_TYPE = "v2v_head"
OVERLAP_FRAMES = reference_spec(COND_TYPE).frames  # 33: the reference frames v2v_head keeps
FRAMES_PER_LATENT = 4  # the Open-Sora 2.0 VAEs' time compression
MAX_PARTS = 32  # the joined video is held in memory: 32 parts of 129 frames at 768px are ~12 GB
EXTENSION_FIELD = "extension"  # the sidecar key holding the source and every part's settings


@dataclass
class ExtensionPlan:
    """A checked extension: the source video and each part's request (reference filled in when it runs)."""

    source: Path
    source_frames: int
    parts: list[GenerationRequest]
    part_frames: int  # frames of a full part
    rule: str  # how part_frames was chosen (written into the sidecar)

    @property
    def frames(self) -> int:
        """Frames of the finished video."""
        return self.source_frames + sum(part.num_frames - OVERLAP_FRAMES for part in self.parts)


def part_frames_rule(preset: Preset, part_frames: int | None = None) -> tuple[int, str]:
    """(frames per part, the rule as a sentence). `part_frames` overrides the preset's choice."""
    if part_frames is not None:
        frames, rule = check_frames(preset, part_frames), f"{part_frames} frames per part, as asked"
    elif preset.sampler.num_frames > OVERLAP_FRAMES:
        frames = preset.sampler.num_frames
        rule = f"the preset's default of {frames} frames per part (above the {OVERLAP_FRAMES} kept)"
    else:
        frames = preset.limits.max_frames
        rule = (f"the preset's frame limit of {frames} frames per part (its default "
                f"{preset.sampler.num_frames} is not above the {OVERLAP_FRAMES} kept)")
    if frames <= OVERLAP_FRAMES:
        raise UserError(f"a part of {frames} frames adds nothing: v2v_head keeps {OVERLAP_FRAMES} frames of the "
                        f"video, so a part needs more (4k+1 from {OVERLAP_FRAMES + FRAMES_PER_LATENT} to "
                        f"{preset.limits.max_frames} for preset {preset.name})")
    return frames, rule


def _part_lengths(source_frames: int, target_frames: int, part_frames: int) -> list[int]:
    """num_frames of each part: full parts, the last one as short as reaches the target."""
    lengths, frames = [], source_frames
    while frames < target_frames:
        missing = math.ceil((target_frames - frames) / FRAMES_PER_LATENT) * FRAMES_PER_LATENT
        lengths.append(min(part_frames, OVERLAP_FRAMES + missing))
        frames += lengths[-1] - OVERLAP_FRAMES
    return lengths


def _check_source(source: Path, preset: Preset) -> int:
    from opensora.io.reference import check_reference_file
    from opensora.io.video import probe_video

    check_reference_file(source, video=True)
    frames = probe_video(source).num_frames
    if frames < OVERLAP_FRAMES:
        raise UserError(f"{source} has {frames} frames; extending needs at least {OVERLAP_FRAMES} "
                        f"(v2v_head continues from the last {OVERLAP_FRAMES})")
    if preset.family != FAMILY_V2:
        raise UserError(f"extending runs on Open-Sora 2.0 presets (v2v_head); {preset.name} is not one")
    return frames


def _check_parts(parts: list[GenerationRequest], source: Path, preset: Preset, options, ckpt_dir) -> None:
    """Every part resolved (against the source as its reference) before anything loads, and fitted to this
    machine when `options` (a PipelineCache's RuntimeOptions) are given."""
    from opensora.runner import check_job_fits

    if len(parts) > MAX_PARTS:
        raise UserError(f"that length needs {len(parts)} parts; at most {MAX_PARTS} are allowed "
                        "(ask for fewer seconds)")
    for part in parts:
        settings = resolve_settings(replace(part, reference=[str(source)]), preset)
        if options is not None:
            check_job_fits(settings, preset, options, ckpt_dir)


# What a part takes over from the source's own settings when it has them (a sidecar or its mp4's tag).
CARRIED_FIELDS = ("preset", "negative_prompt", "num_steps", "guidance", "guidance_img", "text_osci", "image_osci",
                  "scale_temporal_osci", "motion_score", "loras")


def extension_request(source_settings: dict | None, prompt: str | None = None) -> GenerationRequest:
    """The parts' request: the source's sampler settings (its preset, steps, guidance, LoRAs...) when it
    carries them, and `prompt` (None: the source's own prompt). The seed is left to the caller (None: random)."""
    carried = GenerationRequest.from_sidecar(source_settings) if source_settings else GenerationRequest(prompt="")
    values = {name: getattr(carried, name) for name in CARRIED_FIELDS}
    return GenerationRequest(prompt=prompt if prompt is not None else carried.prompt, **values)


def plan_extension(source, request: GenerationRequest, seconds: float, preset: Preset,
                   part_frames: int | None = None, options=None, ckpt_dir=None) -> ExtensionPlan:
    """Check an extension of `source` to `seconds` (the finished video's length, at the preset's fps) before
    any model loads. `request` holds the prompt and sampler settings of every part (cond type, reference,
    frames and samples are the extension's own); part k uses seed + k (a random seed when None). `options`
    (and `ckpt_dir`): the PipelineCache's, to check that each part fits this machine."""
    source = Path(source)
    source_frames = _check_source(source, preset)
    fps = preset.sampler.fps
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 < seconds <= 3600:
        raise UserError(f"seconds {seconds!r} is out of range: allowed above 0 to 3600")
    target = round(seconds * fps)
    if target <= source_frames:
        raise UserError(f"{source.name} already has {source_frames} frames ({source_frames / fps:.2f} s at {fps} fps); "
                        f"ask for more than {source_frames / fps:.2f} seconds (asked: {seconds:g})")
    frames, rule = part_frames_rule(preset, part_frames)
    seed = random.randint(0, SEED_MAX) if request.seed is None else request.seed
    base = replace(request, preset=preset.name, cond_type=COND_TYPE, reference=[], num_samples=1)
    parts = [replace(base, num_frames=n, seed=(seed + k) % (SEED_MAX + 1))
             for k, n in enumerate(_part_lengths(source_frames, target, frames))]
    _check_parts(parts, source, preset, options, ckpt_dir)
    return ExtensionPlan(source, source_frames, parts, frames, rule)


def plan_from_sidecar(sidecar: dict, preset: Preset, options=None, ckpt_dir=None) -> ExtensionPlan:
    """The plan that remakes an extended video from its sidecar (its source and every part's settings)."""
    extension = sidecar.get(EXTENSION_FIELD)
    if not isinstance(extension, dict) or not extension.get("parts"):
        raise UserError("that sidecar is not an extended video's (it has no `extension` with parts)")
    source = Path(extension["source"])
    source_frames = _check_source(source, preset)
    parts = [replace(GenerationRequest.from_sidecar(record), reference=[]) for record in extension["parts"]]
    _check_parts(parts, source, preset, options, ckpt_dir)
    return ExtensionPlan(source, source_frames, parts, int(extension["part_frames"]), extension["part_frames_rule"])


def _source_frames(source: Path, height: int, width: int) -> np.ndarray:
    """The source's frames as uint8 (T, H, W, 3): as decoded, or resized as a reference is when its size differs."""
    from opensora.io.reference import load_reference
    from opensora.io.video import read_video, video_to_uint8

    frames, _ = read_video(source)
    if frames.shape[1:3] == (height, width):
        return frames
    return video_to_uint8(load_reference(source, height, width))


def _store_clip(frames: np.ndarray, fps: int, output_dir: Path) -> str:
    """The last 33 frames so far as an mp4 in OUTPUT_DIR/references/ (named by content): the part's reference."""
    from opensora.io.outputs import store_reference
    from opensora.io.video import encode_video

    with tempfile.TemporaryDirectory() as folder:
        clip = Path(folder) / "clip.mp4"
        encode_video(clip, frames[-OVERLAP_FRAMES:], fps)
        return store_reference(clip.read_bytes(), ".mp4", output_dir)


def run_extension(plan: ExtensionPlan, preset: Preset, pipelines, output_dir, progress=None, cancel_event=None,
                  refine_settings=None):
    """Make every part of `plan` and write the joined video as one unit (mp4 + sidecar + csv row).
    `pipelines`: an `opensora.pipeline_cache.PipelineCache`. Returns the runner's `JobResult`."""
    import time

    from opensora.io.outputs import OutputWriter, copy_reference
    from opensora.io.video import probe_video, video_to_uint8
    from opensora.runner import JobResult, SilentProgress, check_job_fits, generate_videos, settings_notices

    started = time.time()
    progress = progress or SilentProgress()
    writer = OutputWriter(output_dir)
    writer.check_writable()
    source = Path(copy_reference(str(plan.source), writer.output_dir))  # kept: the sidecar remakes from it
    first = resolve_settings(replace(plan.parts[0], reference=[str(source)]), preset)
    height, width, fps = first.height, first.width, first.fps
    frames = _source_frames(source, height, width)
    source_frames, notices = len(frames), []
    source_fps = probe_video(source).fps
    if abs(source_fps - fps) > 0.01 * fps:
        notices.append(f"{plan.source.name} plays at {source_fps:g} fps; its frames are kept and the extended "
                       f"video plays at the preset's {fps} fps")
    records = []
    for k, part in enumerate(plan.parts):
        clip = _store_clip(frames, fps, writer.output_dir)
        settings = resolve_settings(replace(part, reference=[clip], height=height, width=width), preset)
        profiles = check_job_fits(settings, preset, pipelines.options, pipelines.ckpt_dir)
        part_notices = settings_notices(settings, preset)
        progress.message(f"part {k + 1}/{len(plan.parts)}: {settings.num_frames} frames")
        result = generate_videos(preset, settings, pipelines, progress, cancel_event, refine_settings, profiles,
                                 part_notices)
        notices += [n for n in part_notices if n not in notices]  # the same words for every part: said once
        frames = np.concatenate([frames, video_to_uint8(result.videos[0])[OVERLAP_FRAMES:]])
        records.append(result.settings[0])
    progress.message("writing the video")
    sidecar = {**records[0], EXTENSION_FIELD: {
        "source": str(source), "source_frames": source_frames,
        "frames": len(frames), "length_s": round(len(frames) / fps, 3), "fps": fps,
        "overlap_frames": OVERLAP_FRAMES, "part_frames": plan.part_frames, "part_frames_rule": plan.rule,
        "parts": records,
    }}
    path = writer.write(frames, fps, sidecar, text=sidecar["prompt"], seed=sidecar["seed"])
    return JobResult([path], [sidecar], notices, round(time.time() - started, 2))
