"""Image → Video tab (and video extension). API endpoint: `/generate-i2v`."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from app.config import AppConfig
from app.generate_handler import GenerateHandler
from app.presets_info import preset
from app.reference_image import ReferenceImage
from app.settings_form import build_settings_form, request_from_form
from app.tab_t2v import NEGATIVE_INFO, VideoTab, result_column, wire_generate
from opensora.generation_settings import MAX_PROMPT_CHARS
from opensora.presets import FAMILY_V1_2
from opensora.sampling.conditioning import reference_spec
from opensora.sampling.mask_strategy import COND_TYPES_V1_2, reference_spec_v1_2

IMAGE_CONDITIONING = [
    ("First frame: the video starts on the image", "i2v_head"),
    ("Last frame: the video ends on the image", "i2v_tail"),
    ("Loop: from the first image to the second (same image twice if only one)", "i2v_loop"),
]
VIDEO_TYPES_V2 = ("v2v_head", "v2v_tail", "v2v_head_easy", "v2v_tail_easy")


def conditioning_choices(name: str) -> list[tuple[str, str]]:
    """(label, official cond type) for preset `name`: the v2v labels say how many frames of the uploaded
    video its family keeps (2.0: 33, or 65 "long"; 1.2: 17, and no long types)."""
    p = preset(name)
    if p.family == FAMILY_V1_2:
        video = [(t, reference_spec_v1_2(t).frames) for t in COND_TYPES_V1_2 if t.startswith("v2v")]
    else:
        video = [(t, reference_spec(t).frames) for t in VIDEO_TYPES_V2]
    extend = {"head": "keep its first {n} frames, continue after them", "tail": "keep its last {n} frames, lead up to them"}
    return IMAGE_CONDITIONING + [
        (f"Extend a video, {end}{' (long)' if t.endswith('_easy') else ''}: " + extend[end].format(n=frames), t)
        for t, frames in video for end in ["head" if "head" in t else "tail"]
    ]


def conditioning_update(name: str, cond_type: str):
    choices = conditioning_choices(name)
    return gr.update(choices=choices, value=cond_type if cond_type in [t for _, t in choices] else "i2v_head")


@dataclass
class ReferenceInputs:
    """The I2V-only inputs "reuse settings" fills."""

    cond_type: gr.Dropdown
    image: gr.Image
    end_image: gr.Image
    ref_video: gr.Video


def reference_paths(cond_type: str, image: str | None, end_image: str | None, video: str | None) -> list[str]:
    """The pipeline's reference list for a cond type (i2v_loop: [first, last])."""
    if cond_type.startswith("v2v"):
        return [video] if video else []
    if cond_type == "i2v_loop" and image and end_image:
        return [image, end_image]
    return [image] if image else []


def _visibility(cond_type: str):
    is_video = cond_type.startswith("v2v")
    return (gr.update(visible=not is_video), gr.update(visible=cond_type == "i2v_loop"),
            gr.update(visible=is_video))


def build_i2v_tab(config: AppConfig, handler: GenerateHandler, default_preset: str) -> tuple[VideoTab, ReferenceInputs]:
    with gr.Row():
        with gr.Column(scale=1):
            with gr.Row():
                image = ReferenceImage(label="Reference image", type="filepath", sources=["upload", "clipboard"],
                                       height=220, elem_classes=["reference-image"])
                end_image = ReferenceImage(label="Last image (loop)", type="filepath",
                                           sources=["upload", "clipboard"], height=220, visible=False)
                ref_video = gr.Video(label="Video to extend", sources=["upload"], height=220, visible=False)
            cond_type = gr.Dropdown(conditioning_choices(default_preset), value="i2v_head", label="Conditioning")
            prompt = gr.Textbox(label="Prompt", lines=3, placeholder=preset(default_preset).prompt.example,
                                max_length=MAX_PROMPT_CHARS, elem_classes=["prompt-box"])
            negative = gr.Textbox(label="Negative prompt", lines=1, value="", info=NEGATIVE_INFO,
                                  max_length=MAX_PROMPT_CHARS)
            form = build_settings_form(config, default_preset, image_tab=True)
        with gr.Column(scale=1):
            result = result_column()
    cond_type.change(_visibility, cond_type, [image, end_image, ref_video], api_visibility="private", queue=False)

    def generate_i2v(prompt: str, reference_image: str | None, cond_type: str, end_image: str | None,
                     reference_video: str | None, negative_prompt: str, preset: str, resolution: str,
                     aspect_ratio: str, num_frames: int, num_steps: int, guidance: float, guidance_img: float,
                     motion_score: str, seed: int | None, random_seed: bool, num_samples: int, refine: bool,
                     lora: str, lora_scale: float, lora_2: str, lora_scale_2: float, lora_3: str,
                     lora_scale_3: float, speed: str, compile: bool, request: gr.Request, progress=gr.Progress()):
        """Image (or video) to video. Returns (mp4 of the first sample, all mp4s, status text, seed of the
        first video). aspect_ratio "auto": the preset's bucket closest to the reference's shape."""
        values = [preset, resolution, aspect_ratio, num_frames, num_steps, guidance, guidance_img, motion_score,
                  seed, random_seed, num_samples, refine, lora, lora_scale, lora_2, lora_scale_2, lora_3,
                  lora_scale_3, speed, compile]
        references = reference_paths(cond_type, reference_image, end_image, reference_video)
        form_request = request_from_form(values, prompt=prompt, negative_prompt=negative_prompt or "",
                                         cond_type=cond_type, reference=references)
        return handler.run_with_image(form_request, request, progress)

    inputs = [prompt, image, cond_type, end_image, ref_video, negative, *form.request_inputs()]
    event = wire_generate(result, handler, generate_i2v, inputs, api_name="generate-i2v", cancel_api=False)
    form.preset.input(lambda name: gr.update(placeholder=preset(name).prompt.example), form.preset, prompt,
                      api_visibility="private", queue=False)
    form.preset.input(conditioning_update, [form.preset, cond_type], cond_type, api_visibility="private", queue=False)
    tab = VideoTab(prompt, negative, form, result, event)
    return tab, ReferenceInputs(cond_type, image, end_image, ref_video)
