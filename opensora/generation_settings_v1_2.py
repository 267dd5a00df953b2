"""Open-Sora 1.2's part of `resolve_settings`: its frame rule, its cond types and raw mask
strategies, its score conditioning, and the notice for the official `align=5` snapping.

Everything is checked before any model loads (no diffusers import here). The values land in the
same `GenerationSettings` as Open-Sora 2.0's, with `family = "opensora-v1.2"`; the 2.0-only
fields (image guidance, oscillation, shift) are None there, and `motion_score` is the official
`--flow` ("motion score: 4.0." in the T5 text; None = not in the prompt).
"""

from __future__ import annotations

from pathlib import Path

from opensora.configs import check_num_frames_v1_2, latent_frames_v1_2
from opensora.errors import UserError
from opensora.presets import FAMILY_V1_2, Preset

# Request fields only one family reads: given for the other, they are refused (never ignored).
V1_2_ONLY = ("mask_strategy", "aesthetic_score", "camera_motion")
V2_ONLY = ("guidance_img", "text_osci", "image_osci", "scale_temporal_osci")
OFF = ("", "none", "off")  # how the CLI and the UI switch a score off


def refuse_v1_2_fields(request, preset: Preset) -> None:
    """For an Open-Sora 2.0 preset: the 1.2-only settings must be unset."""
    for name in V1_2_ONLY:
        value = getattr(request, name)
        if value is not None:
            raise UserError(
                f"{name} {value!r} is an Open-Sora 1.2 setting; preset {preset.name} is {preset.family_name} "
                "(pick an opensora-v1.2 preset, or use --cond-type for image and video conditioning)"
            )


def refuse_v2_fields(request, preset: Preset) -> None:
    """For an Open-Sora 1.2 preset: 2.0-only settings, LoRAs and negative prompts are refused."""
    for name in V2_ONLY:
        value = getattr(request, name)
        if value is not None:
            raise UserError(f"{name} {value!r} is an Open-Sora 2.0 setting; preset {preset.name} "
                            f"({preset.family_name}) has no such option: leave it out")
    if request.negative_prompt:
        raise UserError(f"preset {preset.name} ({preset.family_name}) takes no negative prompt: it guides "
                        "against the model's learned null caption; leave the negative prompt empty")
    if request.loras:
        raise UserError(f"LoRAs are for Open-Sora 2.0 presets; preset {preset.name} is {preset.family_name}")


def check_cond_type_v1_2(cond_type: str) -> str:
    """t2v and the i2v / v2v types 1.2 can mean (v2v_*_easy cannot: UserError naming the allowed)."""
    from opensora.sampling.mask_strategy import cond_type_strategy

    cond_type_strategy(cond_type)
    return cond_type


def check_frames_v1_2(num_frames, preset: Preset) -> int:
    """1 (an image), micro_frame_size .. max_frames, or a named length of the preset ("4s")."""
    if isinstance(num_frames, str):
        text = num_frames.strip()
        if text in preset.lengths:
            return preset.lengths[text]
        if not text.isdigit():
            names = ", ".join(f"{k} = {v}" for k, v in preset.lengths.items())
            raise UserError(f"num_frames {num_frames!r} is not allowed: give a frame count (1, or "
                            f"{preset.vae.micro_frame_size}..{preset.limits.max_frames})"
                            + (f" or a length of preset {preset.name} ({names})" if names else ""))
        num_frames = int(text)
    return check_num_frames_v1_2(num_frames, preset.limits.max_frames, preset.vae.micro_frame_size)


def parse_flow(value) -> float | None:
    """The official --flow (the T5 text's "motion score"): a number, or None / "none" for none."""
    if value is None or (isinstance(value, str) and value.strip().lower() in OFF):
        return None
    if isinstance(value, str):
        if value.strip().lower() == "dynamic":
            raise UserError("motion score 'dynamic' is for Open-Sora 2.0 presets; Open-Sora 1.2 takes a number "
                            "(its --flow, e.g. 4) or 'none'")
        try:
            value = float(value)
        except ValueError:
            raise UserError(f"motion score {value!r} must be a number 0-100 or 'none'") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"motion score {value!r} must be a number 0-100 or 'none'")
    return float(value)


def _score(value) -> float | None:
    if isinstance(value, str):
        if value.strip().lower() in OFF:
            return None
        try:
            return float(value)
        except ValueError:
            raise UserError(f"aesthetic score {value!r} must be a number 0-10 or 'none'") from None
    return value


def _camera(value) -> str | None:
    return None if value is None or value.strip().lower() in OFF else value.strip()


def prompt_motion_score(settings) -> int | str:
    """The motion score `prepare_prompt` gets: 2.0's own; for 1.2, which writes its scores into the
    T5 text itself (`opensora.pipeline_v1_2`), the 2.0 default (its suffix is not used there)."""
    from opensora.refine.motion import DEFAULT_MOTION_SCORE

    return DEFAULT_MOTION_SCORE if settings.family == FAMILY_V1_2 else settings.motion_score


def reference_latent_frames(cond_type: str, references: list[str], preset: Preset) -> list[int]:
    """Latent frames of each reference latent the pipeline will encode (what the mask strategy can
    place): read per the cond type, or, for t2v with a raw strategy, each file whole (an image: 1)."""
    from opensora.io.reference import check_reference_file
    from opensora.io.video import is_image_path, probe_video
    from opensora.sampling.mask_strategy import reference_spec_v1_2

    vae = preset.vae
    spec = reference_spec_v1_2(cond_type)
    if spec is None:
        for path in references:
            check_reference_file(path)
        return [1 if is_image_path(Path(p)) else latent_frames_v1_2(probe_video(p).num_frames, vae.micro_frame_size,
                                                                      vae.time_compression) for p in references]
    if not references:
        raise UserError(f"cond type {cond_type} needs a reference image or video (--ref)")
    if spec.frames > 1:
        frames = probe_video(references[0]).num_frames
        if frames < spec.frames:
            raise UserError(f"{cond_type} keeps {spec.frames} frames of the reference video; {references[0]} has "
                            f"{frames} (Open-Sora 1.2 conditions on whole {spec.frames}-frame chunks)")
    count = 2 if spec.paths == "first_and_last" else 1
    return [latent_frames_v1_2(spec.frames, vae.micro_frame_size, vae.time_compression)] * count


def resolve_v1_2(request, preset: Preset, cond_type: str, references: list[str], num_frames: int) -> dict:
    """The family-specific GenerationSettings fields of a 1.2 request (the caller did the shared ones)."""
    from opensora.sampling.mask_strategy import parse_mask_strategy, place, resolve_strategy
    from opensora.sampling.prompt_v1_2 import append_scores

    s = preset.sampler
    flow = parse_flow(s.motion_score if request.motion_score is None else request.motion_score)
    aesthetic = _score(s.aesthetic_score if request.aesthetic_score is None else request.aesthetic_score)
    camera = _camera(s.camera_motion if request.camera_motion is None else request.camera_motion)
    append_scores("", aesthetic, flow, camera)  # checks each range and the camera name
    ref_frames = reference_latent_frames(cond_type, references, preset)
    strategy = resolve_strategy(cond_type, request.mask_strategy, len(ref_frames))
    later = [g for g in parse_mask_strategy(strategy) if g.loop_id != 0]
    if later:
        raise UserError(f"mask strategy {strategy!r}: loop_id {later[0].loop_id} needs the official multi-loop "
                        "generation (loop > 1), which this app does not run; use loop_id 0")
    place(parse_mask_strategy(strategy), preset.vae.latent_frames(num_frames), ref_frames, 0, s.align)
    return dict(
        family=FAMILY_V1_2, guidance_img=None, text_osci=None, image_osci=None, scale_temporal_osci=None,
        shift=None, flow_shift=None, fps=s.fps, motion_score=flow, aesthetic_score=aesthetic, camera_motion=camera,
        mask_strategy=strategy, align=s.align,
    )


def placement_notices(settings, preset: Preset) -> list[str]:
    """Where the official align=5 puts a reference elsewhere than its strategy says (e.g. an i2v_tail
    image on latent frame 5 of 10 instead of the last), with a frame count that avoids it."""
    from opensora.sampling.mask_strategy import group_text, parse_mask_strategy, place

    if not settings.mask_strategy or settings.align is None:
        return []
    groups = parse_mask_strategy(settings.mask_strategy)
    ref_frames = reference_latent_frames(settings.cond_type, settings.reference, preset)

    def moved(frames: int) -> list[tuple]:
        t = preset.vae.latent_frames(frames)
        snapped, written = place(groups, t, ref_frames, 0, settings.align), place(groups, t, ref_frames, 0, None)
        return [(g, a, b, t) for g, a, b in zip(groups, snapped, written) if (a.target_start, a.ref_start) !=
                (b.target_start, b.ref_start)]

    def fits(frames: int) -> bool:
        try:
            return not moved(frames)
        except UserError:
            return False

    notices = []
    for group, snapped, written, t in moved(settings.num_frames):
        notices.append(
            f"mask strategy {group_text(group)!r} ({settings.cond_type}): Open-Sora 1.2 snaps positions to "
            f"multiples of {settings.align} latent frames (the official align={settings.align}), so the reference "
            f"lands at latent frame {snapped.target_start} of {t} instead of {written.target_start}"
        )
    if notices:
        lower = preset.vae.micro_frame_size
        candidates = sorted(range(lower, preset.limits.max_frames + 1), key=lambda n: abs(n - settings.num_frames))
        better = next((n for n in candidates if fits(n)), None)
        if better is not None:
            notices[-1] += f"; with {better} frames it lands where the strategy says"
    return notices
