"""Text → Video tab. API endpoint: `/generate-t2v`."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from app.config import AppConfig
from app.generate_handler import GenerateHandler
from app.live_preview import follow_previews, preview_image
from app.presets_info import flux_available, preset
from app.settings_form import SettingsForm, build_settings_form, fill_updates, request_from_form
from opensora.errors import UserError
from opensora.generation_settings import MAX_PROMPT_CHARS, GenerationRequest

NEGATIVE_INFO = "text of the unconditional branches; the official model uses an empty one"
T2I2V_LABEL = "Text → image → video (FLUX)"
T2I2V_INFO = "FLUX.1-dev draws the first frame from the prompt, the video model animates it (official t2i2v)"


@dataclass
class VideoTab:
    """What other tabs touch: the prompt (refinement), the form (reuse settings), the result."""

    prompt: gr.Textbox
    negative_prompt: gr.Textbox
    form: SettingsForm
    result: "ResultColumn"
    generated: object  # the generate event, for chaining (history refresh)
    use_t2i2v: gr.Checkbox | None = None  # the Text → Video tab's text -> image -> video toggle

    def fill_outputs(self) -> list:
        toggle = [self.use_t2i2v] if self.use_t2i2v is not None else []
        return [self.prompt, self.negative_prompt, *toggle, *self.form.fill_outputs()]

    def fill(self, request: GenerationRequest, config: AppConfig) -> list:
        toggle = [t2i2v_update(request.preset, config, request.use_t2i2v)] if self.use_t2i2v is not None else []
        return [request.prompt, request.negative_prompt, *toggle, *fill_updates(request, config, self.form.auto_aspect)]


def t2i2v_update(name: str, config: AppConfig, value: bool | None = None):
    """The toggle for preset `name`: shown where FLUX is available, ticked as `value` (None: the preset's
    default)."""
    try:
        p = preset(name)
    except UserError:  # an unknown preset name from a sidecar: hide the toggle
        return gr.update(visible=False, value=False)
    available = flux_available(p, config.ckpt_dir)
    default = bool(p.flux is not None and p.flux.use_t2i2v)
    return gr.update(visible=available, value=available and (default if value is None else bool(value)))


def result_column():
    """Video player, extra samples, status line, the seed used and the Generate / Cancel buttons."""
    with gr.Row():
        generate = gr.Button("Generate", variant="primary", elem_classes=["generate-button"])
        cancel = gr.Button("Cancel", variant="stop", elem_classes=["cancel-button"])
        # The memory planner's prediction for the current settings (app/memory_controls.py).
        prediction = gr.Markdown("", elem_classes=["memory-prediction"])
    # Cancel answers here, not in the status line: its instant reply and the job's final
    # "Cancelled" would race for the same component.
    cancel_note = gr.Markdown("", label="cancel", elem_classes=["cancel-note"])
    with gr.Row():
        video = gr.Video(label="Result", interactive=False, autoplay=True, loop=True, elem_classes=["result-video"],
                         scale=3)
        # Text -> image -> video: the FLUX first frame the video starts on (hidden otherwise).
        image = gr.Image(label="First frame (FLUX)", type="filepath", interactive=False, visible=False, height=180,
                         scale=1, elem_classes=["result-image"])
        preview = preview_image()  # while sampling: the predicted video every few steps (hidden otherwise)
    samples = gr.Gallery(label="All samples", columns=4, height=180, visible=False, elem_classes=["result-samples"])
    status = gr.Markdown("", label="status", elem_classes=["generation-status"])
    seed_used = gr.Number(label="Seed used", interactive=False, precision=0, elem_classes=["seed-used"])
    return ResultColumn(generate, cancel, cancel_note, video, samples, status, seed_used, image, gr.State(None),
                        preview, prediction=prediction)


@dataclass
class ResultColumn:
    generate: gr.Button
    cancel: gr.Button
    cancel_note: gr.Markdown
    video: gr.Video
    samples: gr.Gallery
    status: gr.Markdown
    seed_used: gr.Number
    image: gr.Image
    image_path: gr.State  # the job's first-frame image (a State: API clients get the same four values)
    preview: gr.Image | None = None  # the live preview (app/live_preview.py)
    prediction: gr.Markdown | None = None  # predicted GPU memory / RAM beside Generate (app/memory_controls.py)


def wire_generate(result: ResultColumn, handler: GenerateHandler, fn, inputs, api_name: str, cancel_api: bool):
    """Generate = clear the last run's lines (instant), then add a job to the persistent queue and
    wait for it (its position while it waits, then its steps). A second user's job, or a second
    click of one's own, waits behind the first in the queue (the Queue tab shows them all)."""
    # Two listeners of the same click: the job's inputs are read at the click itself (a chained
    # step would read them later, after the user may have typed the next prompt).
    cleared = result.generate.click(lambda: ("", ""), None, [result.cancel_note, result.status], queue=False,
                                    api_visibility="private", trigger_mode="multiple", show_progress="hidden")
    event = result.generate.click(
        fn, inputs, [result.video, result.samples, result.status, result.seed_used, result.image_path],
        # No limit: each event only queues its job and waits for it; the job queue's worker runs
        # one job at a time.
        api_name=api_name, concurrency_limit=None, show_progress_on=[result.video],
        trigger_mode="multiple",
    )
    event.then(lambda path: gr.Image(value=path, visible=path is not None), result.image_path, result.image,
               api_visibility="private", queue=False, show_progress="hidden")
    # The extra gallery only matters with several samples (the player shows the first); toggled
    # in its own step so API clients get plain values from the generate endpoint.
    event.then(lambda items: gr.Gallery(visible=len(items or []) > 1), result.samples, result.samples,
               api_visibility="private", queue=False, show_progress="hidden")
    if result.preview is not None:
        # Its own private generator event follows the session's job, so the endpoint's values stay as they are.
        # Chained to the unqueued step: a third queued listener of the click would only start after the job.
        def previews(request: gr.Request):
            yield from follow_previews(handler, request)

        cleared.then(previews, None, result.preview, api_visibility="private", concurrency_limit=None,
                     show_progress="hidden", trigger_mode="multiple")
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
            toggle = t2i2v_update(default_preset, config)
            use_t2i2v = gr.Checkbox(value=toggle["value"], visible=toggle["visible"], label=T2I2V_LABEL,
                                    info=T2I2V_INFO, elem_classes=["t2i2v-toggle"])
            form = build_settings_form(config, default_preset, image_tab=False)
        with gr.Column(scale=1):
            result = result_column()

    def generate_t2v(prompt: str, negative_prompt: str, use_t2i2v: bool, preset: str, resolution: str,
                     aspect_ratio: str, num_frames: int, num_steps: int, guidance: float, guidance_img: float,
                     motion_score: str, seed: int | None, random_seed: bool, num_samples: int, refine: bool,
                     lora: str, lora_scale: float, lora_2: str, lora_scale_2: float, lora_3: str,
                     lora_scale_3: float, speed: str, compile: bool, request: gr.Request, progress=gr.Progress()):
        """Text to video (use_t2i2v: FLUX draws the first frame first). Returns (mp4 of the first sample,
        all mp4s, status text, seed of the first video)."""
        values = [preset, resolution, aspect_ratio, num_frames, num_steps, guidance, guidance_img, motion_score,
                  seed, random_seed, num_samples, refine, lora, lora_scale, lora_2, lora_scale_2, lora_3,
                  lora_scale_3, speed, compile]
        form_request = request_from_form(values, prompt=prompt, negative_prompt=negative_prompt or "", cond_type="t2v",
                                         use_t2i2v=bool(use_t2i2v))
        return handler.run_with_image(form_request, request, progress)

    event = wire_generate(result, handler, generate_t2v, [prompt, negative, use_t2i2v, *form.request_inputs()],
                          api_name="generate-t2v", cancel_api=True)
    form.preset.input(lambda name: gr.update(placeholder=preset(name).prompt.example), form.preset, prompt,
                      api_visibility="private", queue=False)
    form.preset.input(lambda name: t2i2v_update(name, config), form.preset, use_t2i2v,
                      api_visibility="private", queue=False)
    return VideoTab(prompt, negative, form, result, event, use_t2i2v)
