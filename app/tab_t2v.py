"""Text → Video tab. API endpoint: `/generate-t2v`."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from app.config import AppConfig
from app.generate_handler import GenerateHandler
from app.generation import GenerationRequest
from app.settings_form import SettingsForm, build_settings_form, fill_updates

NEGATIVE_INFO = "text of the unconditional branches; the official model uses an empty one"


@dataclass
class VideoTab:
    """What other tabs touch: the prompt (refinement), the form (reuse settings), the result."""

    prompt: gr.Textbox
    negative_prompt: gr.Textbox
    form: SettingsForm
    video: gr.Video
    samples: gr.Gallery
    status: gr.Markdown
    generated: object  # the generate event, for chaining (history refresh)

    def fill_outputs(self) -> list:
        return [self.prompt, self.negative_prompt, *self.form.fill_outputs()]

    def fill(self, settings: dict, config: AppConfig) -> list:
        return [settings.get("prompt", ""), settings.get("negative_prompt", ""), *fill_updates(settings, config)]


def result_column():
    """Video player, extra samples, status line and the Generate / Cancel buttons."""
    with gr.Row():
        generate = gr.Button("Generate", variant="primary", elem_classes=["generate-button"])
        cancel = gr.Button("Cancel", variant="stop", elem_classes=["cancel-button"])
    # Cancel answers here, not in the status line: its instant reply and the job's final
    # "Cancelled" would race for the same component.
    cancel_note = gr.Markdown("", label="cancel", elem_classes=["cancel-note"])
    video = gr.Video(label="Result", interactive=False, autoplay=True, loop=True, elem_classes=["result-video"])
    samples = gr.Gallery(label="All samples", columns=4, height=180, visible=False, elem_classes=["result-samples"])
    status = gr.Markdown("", label="status", elem_classes=["generation-status"])
    return generate, cancel, cancel_note, video, samples, status


def wire_generate(generate, cancel, cancel_note, handler: GenerateHandler, fn, inputs, video, samples, status,
                  form: SettingsForm, api_name: str, cancel_api: bool):
    """Generate = arm the cancel flag (instant), then the queued GPU job (one at a time, app-wide).
    Both tabs' jobs share the concurrency id "gpu": a second user waits and sees their position."""
    event = generate.click(handler.arm, None, cancel_note, queue=False, api_visibility="private").then(
        fn, inputs, [video, samples, status, form.seed], api_name=api_name,
        concurrency_limit=1, concurrency_id="gpu", show_progress_on=[video],
    )
    # The extra gallery only matters with several samples (the player shows the first); toggled
    # in its own step so API clients get plain values from the generate endpoint.
    event.then(lambda items: (gr.Gallery(visible=len(items or []) > 1), ""), samples, [samples, cancel_note],
               api_visibility="private", queue=False, show_progress="hidden")
    # Unqueued: it must get through while the queue is busy with this very job.
    cancel.click(handler.cancel, None, cancel_note, queue=False, api_name="cancel" if cancel_api else None,
                 api_visibility="public" if cancel_api else "private")
    return event


def build_t2v_tab(config: AppConfig, handler: GenerateHandler, default_preset: str) -> VideoTab:
    with gr.Row():
        with gr.Column(scale=1):
            prompt = gr.Textbox(label="Prompt", lines=3, placeholder="a red fox running through fresh snow",
                                elem_classes=["prompt-box"])
            negative = gr.Textbox(label="Negative prompt", lines=1, value="", info=NEGATIVE_INFO)
            form = build_settings_form(config, default_preset, image_guidance=False)
        with gr.Column(scale=1):
            generate, cancel, cancel_note, video, samples, status = result_column()

    def generate_t2v(prompt: str, negative_prompt: str, preset: str, resolution: str, aspect_ratio: str,
                     num_frames: int, num_steps: int, guidance: float, motion_score: str, seed: int | None,
                     random_seed: bool, num_samples: int, refine: bool, lora: str, lora_scale: float,
                     request: gr.Request, progress=gr.Progress()):
        """Text to video. Returns (mp4 of the first sample, all mp4s, status text, seed used)."""
        return handler.run(
            GenerationRequest(
                preset=preset, prompt=prompt, negative_prompt=negative_prompt or "", cond_type="t2v",
                num_frames=int(num_frames), resolution=resolution, aspect_ratio=aspect_ratio,
                num_steps=int(num_steps), guidance=float(guidance), motion_score=motion_score,
                seed=None if random_seed or seed is None else int(seed), num_samples=int(num_samples),
                refine=bool(refine), lora=lora or None, lora_scale=float(lora_scale),
            ),
            request, progress,
        )

    inputs = [prompt, negative, form.preset, form.resolution, form.aspect_ratio, form.num_frames, form.num_steps,
              form.guidance, form.motion_score, form.seed, form.random_seed, form.num_samples, form.refine,
              form.lora, form.lora_scale]
    event = wire_generate(generate, cancel, cancel_note, handler, generate_t2v, inputs, video, samples, status, form,
                          api_name="generate-t2v", cancel_api=True)
    return VideoTab(prompt, negative, form, video, samples, status, event)
