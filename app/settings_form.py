"""The generation settings both video tabs share: preset, size, frames, sampler, seed, LoRA.

Built once per tab (each tab keeps its own values). Preset and resolution use `.input` (user
edits only), so "reuse settings" can fill every control without the preset handler resetting
them to the preset's defaults right after. Limits and defaults come from the preset.
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from app.config import AppConfig
from app.presets_info import availability, check_selectable, preset
from app.lora_slots import PICKERS, SCALES, build_lora_slots, chosen_loras, picker_updates, slot_values
from opensora.errors import UserError
from opensora.generation_settings import AUTO_ASPECT, SEED_MAX, GenerationRequest, frame_rule
from opensora.presets import FAMILY_V1_2, Preset, SamplerDefaults
from opensora.sampling.cache_spec import SPEEDS, offered_speeds, parse_cache_spec, speed_of

# One list for both families (each refuses the other's word): "dynamic" asks the refinement server
# (Open-Sora 2.0); "none" leaves the motion score out of the prompt (Open-Sora 1.2, its default).
MOTION_CHOICES = ["dynamic", "none"] + [str(i) for i in range(1, 16)]
MAX_STEPS = 200  # the pipeline allows 500; more than 200 only makes sense for experiments
MAX_SAMPLES = 4
AUTO_CHOICE = ("auto (follow the image)", AUTO_ASPECT)
# Controls that follow the preset, those "reuse settings" fills, and those a request is made of.
PRESET_FIELDS = ("resolution", "aspect_ratio", "num_frames", "frames_note", "num_steps", "guidance", "guidance_img",
                 "motion_score", *PICKERS, "speed")
FILL_FIELDS = ("preset", *PRESET_FIELDS, "seed", "random_seed", "num_samples", *SCALES, "compile")
LORA_FIELDS = tuple(name for pair in zip(PICKERS, SCALES) for name in pair)  # lora, lora_scale, lora_2, ...
REQUEST_FIELDS = ("preset", "resolution", "aspect_ratio", "num_frames", "num_steps", "guidance", "guidance_img",
                  "motion_score", "seed", "random_seed", "num_samples", "refine", *LORA_FIELDS, "speed", "compile")


def image_guidance(p: Preset) -> bool:
    """Open-Sora 1.2 has no image guidance (its slider is hidden and not sent)."""
    return p.family != FAMILY_V1_2


def motion_value(value) -> str:
    """The dropdown's entry for a motion score (1.2's None = "none", its 4.0 = "4")."""
    return "none" if value is None else str(value).removesuffix(".0")


def frames_note(p: Preset, num_frames) -> str:
    trained = p.limits.trained_frames
    if trained is not None and isinstance(num_frames, (int, float)) and num_frames > trained:
        return (f"⚠ {int(num_frames)} frames is past the {trained} that `{p.name}` was trained on: "
                "expect a broken or black video.")
    return ""


def speed_choices(p: Preset, custom: str = "") -> list:
    """The speeds the preset offers; a reused video's own step cache (`custom`, a spec) as one more."""
    return [*offered_speeds(p.speed), *([(f"custom: {custom}", custom)] if custom else [])]


def speed_info(p: Preset) -> str:
    """The one-line trade-off under the speed dropdown (the preset's measured note)."""
    if p.speed is None or not p.speed.note:
        return "quality: every step computed (no faster settings measured for this preset)"
    return p.speed.note


def speed_value(p: Preset, request: GenerationRequest) -> str:
    """The dropdown's value for a request made from a sidecar: a speed, or its step cache's spec."""
    if request.cache is None:
        return request.speed or "quality"
    spec = parse_cache_spec(request.cache)
    level = speed_of(p.speed, spec, p.name)
    return level if level in SPEEDS else spec.text


def aspect_choices(p: Preset, resolution: str, auto: bool) -> list:
    return ([AUTO_CHOICE] if auto else []) + list(p.buckets[resolution])


@dataclass
class SettingsForm:
    preset: gr.Dropdown
    preset_help: gr.Markdown
    resolution: gr.Dropdown
    aspect_ratio: gr.Dropdown
    num_frames: gr.Slider
    frames_note: gr.Markdown
    num_steps: gr.Slider
    guidance: gr.Slider
    guidance_img: gr.Slider
    motion_score: gr.Dropdown
    seed: gr.Number
    random_seed: gr.Checkbox
    num_samples: gr.Slider
    refine: gr.Checkbox
    lora_pickers: list[gr.Dropdown]  # the LoRA rows (app.lora_slots), first row first
    lora_scales: list[gr.Slider]
    speed: gr.Dropdown
    compile: gr.Checkbox
    auto_aspect: bool  # the I2V tab offers "auto": the bucket closest to the reference

    def control(self, name: str):
        """The control of a field name; the LoRA rows' are lora, lora_scale, lora_2, lora_scale_2, ..."""
        if name in PICKERS:
            return self.lora_pickers[PICKERS.index(name)]
        if name in SCALES:
            return self.lora_scales[SCALES.index(name)]
        return getattr(self, name)

    def preset_outputs(self) -> list:
        return [self.control(name) for name in PRESET_FIELDS]

    def fill_outputs(self) -> list:
        return [self.control(name) for name in FILL_FIELDS]

    def request_inputs(self) -> list:
        return [self.control(name) for name in REQUEST_FIELDS]


def request_from_form(values: list, **fixed) -> GenerationRequest:
    """A GenerationRequest from `request_inputs()` values plus the tab's own (prompt, cond type...)."""
    v = dict(zip(REQUEST_FIELDS, values))
    random_seed, seed = v.pop("random_seed"), v.pop("seed")
    loras = chosen_loras([v.pop(name) for name in PICKERS], [v.pop(name) for name in SCALES])
    speed = v.pop("speed") or "quality"  # a speed, or the spec of a reused video's own step cache
    is_speed = speed in SPEEDS
    uses_image_guidance = not v["preset"] or image_guidance(preset(v["preset"]))
    return GenerationRequest(
        **fixed, preset=v["preset"], resolution=v["resolution"], aspect_ratio=v["aspect_ratio"],
        num_frames=int(v["num_frames"]), num_steps=int(v["num_steps"]), guidance=float(v["guidance"]),
        guidance_img=float(v["guidance_img"]) if uses_image_guidance else None, motion_score=v["motion_score"],
        seed=None if random_seed or seed is None else int(seed), num_samples=int(v["num_samples"]),
        refine=bool(v["refine"]), loras=loras,
        speed=speed if is_speed else None, cache=None if is_speed else speed, compile=bool(v["compile"]),
    )


def build_settings_form(config: AppConfig, default_preset: str, image_tab: bool) -> SettingsForm:
    """`image_tab`: the I2V tab (image guidance shown, aspect ratio "auto" by default)."""
    info = availability(config.ckpt_dir)
    p = preset(default_preset)
    s = p.sampler
    with gr.Group():
        with gr.Row():
            names = info.selectable + ([default_preset] if default_preset not in info.selectable else [])
            choices = [(preset(name).label, name) for name in names]  # "opensora-v1-2 (Open-Sora 1.2)"
            preset_dd = gr.Dropdown(choices, value=default_preset, label="Model preset",
                                    info="presets whose files are present", scale=2)
            resolution = gr.Dropdown(list(p.buckets), value=s.resolution, label="Resolution", scale=1)
            aspect = gr.Dropdown(aspect_choices(p, s.resolution, image_tab),
                                 value=AUTO_ASPECT if image_tab else s.aspect_ratio, label="Aspect ratio", scale=1)
        with gr.Accordion(f"Other presets ({len(info.missing)}): files missing, how to get them", open=False,
                          visible=bool(info.missing)):
            preset_help = gr.Markdown(info.help_markdown(config.ckpt_dir))
        with gr.Row():
            # minimum 1, step 4 (2.0): the control itself only offers 4k+1 frames; 1.2 steps by 1.
            rule = frame_rule(p)
            num_frames = gr.Slider(1, rule.max_frames, value=rule.nearest(s.num_frames), step=rule.step,
                                   label="Frames", info=rule.text)
            num_steps = gr.Slider(1, MAX_STEPS, value=s.num_steps, step=1, label="Steps")
            speed = gr.Dropdown(speed_choices(p), value="quality", label="Speed", info=speed_info(p))
            compile_box = gr.Checkbox(value=False, label="Compile", info="torch.compile the model's blocks: the "
                                      "first video of a size compiles (minutes), later ones run faster")
        note = gr.Markdown(frames_note(p, s.num_frames), elem_classes=["frames-note"])
        with gr.Row():
            guidance = gr.Slider(0, 20, value=s.guidance, step=0.5, label="Text guidance")
            # 1.2 presets have no image guidance: the slider is hidden, keeps the 2.0 default and is not sent.
            guidance_img = gr.Slider(0, 20, value=getattr(s, "guidance_img", SamplerDefaults.guidance_img), step=0.5,
                                     label="Image guidance", visible=image_tab and image_guidance(p))
            motion = gr.Dropdown(MOTION_CHOICES, value=motion_value(s.motion_score), label="Motion score",
                                 info="1 (still) to 15 (a lot); 2.0: dynamic asks the refinement server; "
                                      "1.2: none leaves it out")
        with gr.Row():
            random_seed = gr.Checkbox(value=True, label="Random seed", info="untick to pick the seed")
            # Shown only when "random" is off, so it never shows a number that will not be used.
            seed = gr.Number(value=42, precision=0, minimum=0, maximum=SEED_MAX, label="Seed", visible=False,
                             elem_classes=["seed-box"])
            num_samples = gr.Slider(1, MAX_SAMPLES, value=1, step=1, label="Samples", info="one seed each: seed + k")
        refine = gr.Checkbox(value=False, label="Refine prompt first",
                             info="rewrites the prompt in detail with the refinement server if one is configured, "
                                  "else offline (not for a model with a fixed vocabulary)")
        loras = build_lora_slots(config, p.name)
    form = SettingsForm(preset_dd, preset_help, resolution, aspect, num_frames, note, num_steps, guidance,
                        guidance_img, motion, seed, random_seed, num_samples, refine, loras.pickers, loras.scales,
                        speed, compile_box, image_tab)

    private = dict(api_visibility="private", queue=False)
    preset_dd.input(lambda name, *paths: preset_updates(name, config, image_tab, loras=list(paths)),
                    [preset_dd, *loras.pickers], form.preset_outputs(), **private)
    resolution.input(lambda name, res: aspect_update(name, res, image_tab), [preset_dd, resolution], aspect, **private)
    # Queued: a toast (gr.Warning) reaches the page only through the queue.
    num_frames.input(frames_input, [preset_dd, num_frames], [num_frames, note], api_visibility="private",
                     show_progress="hidden")
    random_seed.input(lambda on: gr.update(visible=not on), random_seed, seed, **private)
    return form


def frames_input(name: str, num_frames):
    """Refuse a typed frame count the preset does not take at once (snapping to the nearest allowed)."""
    p = preset(name)
    if not isinstance(num_frames, (int, float)):
        return gr.update(), gr.update()
    allowed = frame_rule(p).nearest(int(num_frames))
    if allowed != num_frames:
        gr.Warning(f"{num_frames:g} frames is not allowed for {p.name}: use {frame_rule(p).text}; set to {allowed}")
    return allowed, frames_note(p, allowed)


def preset_updates(name: str, config: AppConfig, image_tab: bool, sampler_overrides: dict | None = None,
                   loras: list[str] | None = None, reused: bool = False) -> list:
    """Choices and defaults of every control that depends on the preset (order: preset_outputs)."""
    p = preset(name)
    s = p.sampler
    values = {
        "resolution": s.resolution, "aspect_ratio": AUTO_ASPECT if image_tab else s.aspect_ratio,
        "num_frames": s.num_frames, "num_steps": s.num_steps, "guidance": s.guidance,
        "guidance_img": getattr(s, "guidance_img", SamplerDefaults.guidance_img), "motion_score": s.motion_score,
        "speed": "quality", **(sampler_overrides or {}),
    }
    resolution = values["resolution"] if values["resolution"] in p.buckets else s.resolution
    ratios = aspect_choices(p, resolution, image_tab)
    names = [r[1] if isinstance(r, tuple) else r for r in ratios]
    aspect = values["aspect_ratio"] if values["aspect_ratio"] in names else names[0]
    rule = frame_rule(p)
    frames = rule.nearest(int(values["num_frames"]))
    return [
        gr.update(choices=list(p.buckets), value=resolution),
        gr.update(choices=ratios, value=aspect),
        gr.update(maximum=rule.max_frames, value=frames, step=rule.step, info=rule.text),
        frames_note(p, frames),
        values["num_steps"],
        values["guidance"],
        gr.update(value=values["guidance_img"], visible=image_tab and image_guidance(p)),
        motion_value(values["motion_score"]),
        *picker_updates(config.runs_dir, p.name, loras or [], reused),
        speed_update(p, values["speed"]),
    ]


def speed_update(p: Preset, value: str):
    """The speed dropdown for preset `p`: a speed it does not offer falls back to quality."""
    custom = value if value not in SPEEDS else ""
    if value in SPEEDS and value not in offered_speeds(p.speed):
        value = "quality"
    return gr.update(choices=speed_choices(p, custom), value=value, info=speed_info(p))


def aspect_update(name: str, resolution: str, image_tab: bool):
    p = preset(name)
    if resolution not in p.buckets:
        return gr.update()
    ratios = aspect_choices(p, resolution, image_tab)
    first = ratios[0]
    return gr.update(choices=ratios, value=first[1] if isinstance(first, tuple) else first)


def fill_updates(request: GenerationRequest, config: AppConfig, image_tab: bool) -> list:
    """Updates for `SettingsForm.fill_outputs()` from a request made from a sidecar (reuse settings)."""
    name = request.preset
    try:
        check_selectable(name, config.ckpt_dir)
    except UserError:
        gr.Warning(f"preset {name!r} of that video is not available here; keeping the current one")
        return [gr.update() for _ in FILL_FIELDS]
    keys = ("resolution", "aspect_ratio", "num_frames", "num_steps", "guidance", "guidance_img", "motion_score")
    overrides = {k: getattr(request, k) for k in keys if getattr(request, k) is not None}
    overrides["speed"] = speed_value(preset(name), request)
    paths, scales = slot_values(request.loras)
    return [
        name,
        *preset_updates(name, config, image_tab, overrides, loras=paths, reused=True),
        gr.update(value=request.seed, visible=True),
        False,  # reuse means "this seed"
        1,
        *scales,
        bool(request.compile),
    ]
