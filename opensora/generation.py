"""What the CLI and the UI do around one pipeline call: check settings before loading a model,
and write the videos with the prompt handling in their sidecars."""

from pathlib import Path

from opensora.errors import UserError


def check_settings(
    preset,
    prompt: str,
    cond_type: str,
    reference: list[str],
    num_frames: int | None = None,
    resolution: str | None = None,
    aspect_ratio: str | None = None,
    sized: bool = False,
    motion_score=None,
) -> str:
    """Fail on bad settings in a second, not after minutes of model loading. Returns the
    normalised cond type. `sized`: an explicit height/width replaces the bucket (checked later)."""
    from opensora.pipeline import check_num_frames
    from opensora.refine import parse_motion_setting
    from opensora.sampling.conditioning import normalize_cond_type

    if not prompt or not prompt.strip():
        raise UserError("the prompt is empty: describe the video to generate")
    check_num_frames(preset.sampler.num_frames if num_frames is None else num_frames)
    if not sized:
        preset.image_size(resolution or preset.sampler.resolution, aspect_ratio or preset.sampler.aspect_ratio)
    if motion_score is not None:
        parse_motion_setting(motion_score)
    cond_type = normalize_cond_type(cond_type)
    if cond_type != "t2v":
        if not reference:
            raise UserError(f"cond type {cond_type} needs a reference image or video (--ref, or upload one)")
        for path in reference:
            if not Path(path).is_file():
                raise UserError(f"reference file {path} does not exist")
    return cond_type


def write_videos(writer, result, prepared, text: str) -> list[Path]:
    """Numbered mp4 + sidecar (with the prompt handling) + results.csv row per video."""
    paths = []
    for video, settings in zip(result.videos, result.settings):
        settings["prompt_handling"] = prepared.to_sidecar()
        paths.append(writer.write(video, settings["fps"], settings, text=text, seed=settings["noise_seed"]))
    return paths
