"""Text → Video tab. API endpoint: `/generate-t2v`."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from app.config import AppConfig
from app.generate_handler import GenerateHandler
from app.presets_info import preset
from app.settings_form import SettingsForm, build_settings_form, fill_updates, request_from_form
from opensora.generation_settings import MAX_PROMPT_CHARS, GenerationRequest

NEGATIVE_INFO = "text of the unconditional branches; the official model uses an empty one"


@dataclass
class VideoTab:
    """What other tabs touch: the prompt (refinement), the form (reuse settings), the result."""

    prompt: gr.Textbox
    negative_prompt: gr.Textbox
    form: SettingsForm
    result: "ResultColumn"
    generated: object  # the generate event, for chaining (history refresh)

    def fill_outputs(self) -> list:
        return [self.prompt, self.negative_prompt, *self.form.fill_outputs()]

    def fill(self, request: GenerationRequest, config: AppConfig) -> list:
        return [request.prompt, request.negative_prompt, *fill_updates(request, config, self.form.auto_aspect)]


def result_column():
    """Video player, extra samples, status line, the seed used and the Generate / Cancel buttons."""
    with gr.Row():
        generate = gr.Button("Generate", variant="primary", elem_classes=["generate-button"])
        cancel = gr.Button("Cancel", variant="stop", elem_classes=["cancel-button"])
    # Cancel answers here, not in the status line: its instant reply and the job's final
    # "Cancelled" would race for the same component.
    cancel_note = gr.Markdown("", label="cancel", elem_classes=["cancel-note"])
    video = gr.Video(label="Result", interactive=False, autoplay=True, loop=True, elem_classes=["result-video"])
    samples = gr.Gallery(label="All samples", columns=4, height=180, visible=False, elem_classes=["result-samples"])
    status = gr.Markdown("", label="status", elem_classes=["generation-status"])
    seed_used = gr.Number(label="Seed used", interactive=False, precision=0, elem_classes=["seed-used"])
    return ResultColumn(generate, cancel, cancel_note, video, samples, status, seed_used)


@dataclass
class ResultColumn:
    generate: gr.Button
    cancel: gr.Button
    cancel_note: gr.Markdown
    video: gr.Video
    samples: gr.Gallery
    status: gr.Markdown
    seed_used: gr.Number


def wire_generate(result: ResultColumn, handler: GenerateHandler, fn, inputs, api_name: str, cancel_api: bool):
    """Generate = arm the cancel flag and clear the last run's lines (instant), then the queued GPU
    job (one at a time, app-wide). Both tabs' jobs share the concurrency id "gpu": a second user
    waits and sees their position; a second click of one's own waits behind the first."""
    def arm(request: gr.Request):
        return handler.arm(request), ""

    arm = result.generate.click(arm, None, [result.cancel_note, result.status], queue=False,
                                api_visibility="private", trigger_mode="multiple")
    event = arm.then(
        fn, inputs, [result.video, result.samples, result.status, result.seed_used], api_name=api_name,
        concurrency_limit=1, concurrency_id="gpu", show_progress_on=[result.video],
    )
    # The extra gallery only matters with several samples (the player shows the first); toggled
    # in its own step so API clients get plain values from the generate endpoint.
    event.then(lambda items: gr.Gallery(visible=len(items or []) > 1), result.samples, result.samples,
               api_visibility="private", queue=False, show_progress="hidden")
    # Unqueued: it must get through while the queue is busy with this very job.
    result.cancel.click(handler.cancel, None, result.cancel_note, queue=False,
                        api_name="cancel" if cancel_api else None,
                        api_visibility="public" if cancel_api else "private")
    return event


def build_t2v_tab(config: AppConfig, handler: GenerateHandler, default_preset: str) -> VideoTab:
    example = preset(default_preset).prompt.example
    with gr.Row():
        with gr.Column(scale=1):
            prompt = gr.Textbox(label="Prompt", lines=3, placeholder=example, max_length=MAX_PROMPT_CHARS,
                                elem_classes=["prompt-box"])
            negative = gr.Textbox(label="Negative prompt", lines=1, value="", info=NEGATIVE_INFO,
                                  max_length=MAX_PROMPT_CHARS)
            form = build_settings_form(config, default_preset, image_tab=False)
        with gr.Column(scale=1):
            result = result_column()

    def generate_t2v(prompt: str, negative_prompt: str, preset: str, resolution: str, aspect_ratio: str,
                     num_frames: int, num_steps: int, guidance: float, guidance_img: float, motion_score: str,
                     seed: int | None, random_seed: bool, num_samples: int, refine: bool, lora: str,
                     lora_scale: float, request: gr.Request, progress=gr.Progress()):
        """Text to video. Returns (mp4 of the first sample, all mp4s, status text, seed of the first video)."""
        values = [preset, resolution, aspect_ratio, num_frames, num_steps, guidance, guidance_img, motion_score,
                  seed, random_seed, num_samples, refine, lora, lora_scale]
        return handler.run(request_from_form(values, prompt=prompt, negative_prompt=negative_prompt or "",
                                             cond_type="t2v"), request, progress)

    event = wire_generate(result, handler, generate_t2v, [prompt, negative, *form.request_inputs()],
                          api_name="generate-t2v", cancel_api=True)
    form.preset.input(lambda name: gr.update(placeholder=preset(name).prompt.example), form.preset, prompt,
                      api_visibility="private", queue=False)
    return VideoTab(prompt, negative, form, result, event)
