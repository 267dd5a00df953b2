"""The generation settings both video tabs share: preset, size, frames, sampler, seed, LoRA.

Built once per tab (each tab keeps its own values). Preset and resolution use `.input` (user
edits only), so "reuse settings" can fill every control without the preset handler resetting
them to the preset's defaults right after.
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from app.config import AppConfig
from app.presets_info import availability, check_selectable, flux_available, preset
from app.training_runs import lora_choices
from opensora.errors import UserError

MOTION_CHOICES = ["dynamic"] + [str(i) for i in range(1, 16)]
MAX_STEPS = 200  # the pipeline allows 500; more than 200 only makes sense for experiments
MAX_SAMPLES = 4
# Controls that follow the preset, and those "reuse settings" fills (in this order).
PRESET_FIELDS = ("resolution", "aspect_ratio", "num_frames", "num_steps", "guidance", "guidance_img",
                 "motion_score", "t2i2v")
FILL_FIELDS = ("preset", *PRESET_FIELDS, "seed", "random_seed", "num_samples", "lora", "lora_scale")


def _frames_slider_value(n: int) -> int:
    """Nearest 4k+1 in 1..129 (the slider steps by 4 from 1, so only those values exist)."""
    return max(1, min(129, 4 * round((n - 1) / 4) + 1))


@dataclass
class SettingsForm:
    preset: gr.Dropdown
    preset_help: gr.Markdown
    resolution: gr.Dropdown
    aspect_ratio: gr.Dropdown
    num_frames: gr.Slider
    num_steps: gr.Slider
    guidance: gr.Slider
    guidance_img: gr.Slider
    motion_score: gr.Dropdown
    seed: gr.Number
    random_seed: gr.Checkbox
    num_samples: gr.Slider
    refine: gr.Checkbox
    t2i2v: gr.Checkbox
    lora: gr.Dropdown
    lora_scale: gr.Slider

    def preset_outputs(self) -> list:
        return [getattr(self, name) for name in PRESET_FIELDS]

    def fill_outputs(self) -> list:
        return [getattr(self, name) for name in FILL_FIELDS]


def build_settings_form(config: AppConfig, default_preset: str, image_guidance: bool) -> SettingsForm:
    info = availability(config.ckpt_dir)
    p = preset(default_preset)
    s = p.sampler
    with gr.Group():
        with gr.Row():
            choices = info.selectable + ([default_preset] if default_preset not in info.selectable else [])
            preset_dd = gr.Dropdown(choices, value=default_preset, label="Model preset",
                                    info="presets whose files are present", scale=2)
            resolution = gr.Dropdown(list(p.buckets), value=s.resolution, label="Resolution", scale=1)
            aspect = gr.Dropdown(list(p.buckets[s.resolution]), value=s.aspect_ratio, label="Aspect ratio", scale=1)
        with gr.Accordion(f"Other presets ({len(info.missing)}): files missing, how to get them", open=False,
                          visible=bool(info.missing)):
            preset_help = gr.Markdown(info.help_markdown(config.ckpt_dir))
        with gr.Row():
            # minimum 1, step 4: the control itself only offers 4k+1 frames.
            num_frames = gr.Slider(1, 129, value=_frames_slider_value(s.num_frames), step=4, label="Frames",
                                   info="4k+1, at most 129")
            num_steps = gr.Slider(1, MAX_STEPS, value=s.num_steps, step=1, label="Steps")
        with gr.Row():
            guidance = gr.Slider(0, 20, value=s.guidance, step=0.5, label="Text guidance")
            guidance_img = gr.Slider(0, 20, value=s.guidance_img, step=0.5, label="Image guidance",
                                     visible=image_guidance)
            motion = gr.Dropdown(MOTION_CHOICES, value=str(s.motion_score), label="Motion score",
                                 info="1 (still) to 15 (a lot); dynamic asks the refinement server")
        with gr.Row():
            seed = gr.Number(value=42, precision=0, minimum=0, maximum=2**32 - 1, label="Seed",
                             info="shows the seed used after each run")
            random_seed = gr.Checkbox(value=True, label="Random seed")
            num_samples = gr.Slider(1, MAX_SAMPLES, value=1, step=1, label="Samples")
        with gr.Row():
            refine = gr.Checkbox(value=False, label="Refine prompt first",
                                 info="refinement server if configured, else offline")
            # Shown only for presets that declare FLUX files that are present: none yet, as the
            # core has no T2I2V; wire it into the request when it does.
            t2i2v = gr.Checkbox(value=False, label="Text → image → video (FLUX)",
                                visible=flux_available(p, config.ckpt_dir))
        with gr.Row():
            lora = gr.Dropdown(lora_choices(config.runs_dir), value="", label="LoRA",
                               info=f"fine-tuned in {config.runs_dir.name}/ (Fine-tune tab)", scale=2)
            lora_scale = gr.Slider(0, 2, value=1.0, step=0.05, label="LoRA scale", scale=1)
    form = SettingsForm(preset_dd, preset_help, resolution, aspect, num_frames, num_steps, guidance, guidance_img,
                        motion, seed, random_seed, num_samples, refine, t2i2v, lora, lora_scale)

    preset_dd.input(lambda name: preset_updates(name, config), preset_dd, form.preset_outputs(),
                    api_visibility="private", queue=False)
    resolution.input(lambda name, res: aspect_update(name, res), [preset_dd, resolution], aspect,
                     api_visibility="private", queue=False)
    return form


def preset_updates(name: str, config: AppConfig, sampler_overrides: dict | None = None) -> list:
    """Choices and defaults of every control that depends on the preset (order: preset_outputs)."""
    p = preset(name)
    s = p.sampler
    values = {
        "resolution": s.resolution, "aspect_ratio": s.aspect_ratio, "num_frames": s.num_frames,
        "num_steps": s.num_steps, "guidance": s.guidance, "guidance_img": s.guidance_img,
        "motion_score": s.motion_score, **(sampler_overrides or {}),
    }
    resolution = values["resolution"] if values["resolution"] in p.buckets else s.resolution
    ratios = list(p.buckets[resolution])
    aspect = values["aspect_ratio"] if values["aspect_ratio"] in ratios else ratios[0]
    return [
        gr.update(choices=list(p.buckets), value=resolution),
        gr.update(choices=ratios, value=aspect),
        _frames_slider_value(int(values["num_frames"])),
        values["num_steps"],
        values["guidance"],
        values["guidance_img"],
        str(values["motion_score"]),
        gr.update(visible=flux_available(p, config.ckpt_dir), value=False),
    ]


def aspect_update(name: str, resolution: str):
    ratios = list(preset(name).buckets.get(resolution, {}))
    return gr.update(choices=ratios, value=ratios[0] if ratios else None)


def fill_updates(settings: dict, config: AppConfig) -> list:
    """Updates for `SettingsForm.fill_outputs()` from a sidecar (reuse settings)."""
    name = settings.get("preset")
    try:
        check_selectable(name, config.ckpt_dir)
    except UserError:
        gr.Warning(f"preset {name!r} of that video is not available here; keeping the current one")
        return [gr.update() for _ in FILL_FIELDS]
    keys = ("resolution", "aspect_ratio", "num_frames", "num_steps", "guidance", "guidance_img", "motion_score")
    overrides = {k: settings[k] for k in keys if settings.get(k) is not None}
    loras = settings.get("loras") or [{}]  # the picker holds one LoRA: the first merged one
    lora, scale = loras[0].get("path", ""), loras[0].get("scale", 1.0)
    return [
        name,
        *preset_updates(name, config, overrides),
        settings.get("seed", 42),
        False,  # reuse means "this seed"
        1,
        gr.update(choices=lora_choices(config.runs_dir, keep=lora), value=lora),
        scale,
    ]
