"""Assembles the tabs into one Gradio app and wires what crosses tabs (send prompt, reuse settings,
history refresh). `build_app(config)` -> (Blocks, Services); launch.py launches it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from app.config import AppConfig
from app.generate_handler import GenerateHandler
from app.memory_controls import build_memory_controls, wire_prediction
from app.live_preview import preview_dir
from app.presets_info import availability, banner_markdown, check_selectable, preset, startup_preset
from app.tab_finetune import build_finetune_tab
from app.extend_handler import ExtendHandler
from app.settings_drop import build_settings_drop, dropped_settings
from app.tab_history import build_history_tab, refresh_event_args, send_to_i2v
from app.tab_i2v import build_i2v_tab, conditioning_choices
from app.tab_queue import build_queue_tab
from app.tab_refine import build_refine_tab
from app.tab_t2v import build_t2v_tab
from app.training_runs import TrainingRuns, lora_choices
from opensora.errors import UserError
from opensora.generation_settings import GenerationRequest
from opensora.job_queue import JobQueue
from opensora.pipeline_cache import PipelineCache
from opensora.queue_worker import QueueWorker

CSS = """
.model-banner { font-size: 0.95em; }
.generation-status { min-height: 1.5em; }
.result-preview img { width: 100%; height: 100%; object-fit: contain; }  /* the live preview is latent-sized */
"""


@dataclass
class Services:
    """The long-lived objects behind the UI (tests and launch.py reach them here)."""

    default_preset: str
    cache: PipelineCache
    runs: TrainingRuns
    queue: JobQueue
    worker: QueueWorker


# Gradio's temp copies of results and uploads: every hour, those older than a day are deleted
# (an exposed app would otherwise fill its disk).
TEMP_CACHE_CLEANUP_S = (3600, 24 * 3600)  # (how often, minimum age)


def allowed_paths(config: AppConfig) -> list[str]:
    """Gradio may serve files from the output folder, nothing else. Its own upload/temp folder is
    not listed: Gradio serves what it created there itself, and serves uploads of unsafe types
    (HTML, SVG) as attachments only; listed here, they would come back inline, as a page that
    runs its scripts in the app's origin."""
    return [str(config.output_dir)]


def build_app(config: AppConfig) -> tuple[gr.Blocks, Services]:
    default = startup_preset(config.preset, config.ckpt_dir)
    check_selectable(default, config.ckpt_dir)  # a bad --preset fails at start, with the reason
    config.output_dir.mkdir(parents=True, exist_ok=True)
    cache = PipelineCache(config.ckpt_dir)
    queue = JobQueue(config.output_dir)
    # The worker's jobs write live preview files to a temp folder (shown by app/live_preview.py).
    worker = QueueWorker(queue, cache, preview_dir=preview_dir())
    services = Services(default, cache, TrainingRuns(config.runs_dir), queue, worker)
    handler = GenerateHandler(config, services.cache, services.queue, services.worker)
    services.worker.start()  # jobs queued before a restart go on at once
    demo_available = "demo" in availability(config.ckpt_dir).selectable

    with gr.Blocks(title="Open-Sora Studio", delete_cache=TEMP_CACHE_CLEANUP_S) as demo:
        gr.Markdown("# Open-Sora Studio")
        gr.Markdown(banner_markdown(default, config.ckpt_dir), elem_classes=["model-banner"])
        memory = build_memory_controls(services.cache)  # for every job of the app
        with gr.Tabs() as tabs:
            with gr.Tab("Text → Video", id="t2v", elem_id="tab-t2v") as t2v_tab:
                t2v = build_t2v_tab(config, handler, default)
                t2v_drop = build_settings_drop()
            with gr.Tab("Image → Video", id="i2v", elem_id="tab-i2v") as i2v_tab:
                i2v, refs = build_i2v_tab(config, handler, default)
                i2v_drop = build_settings_drop()
            with gr.Tab("Prompt refinement", id="refine", elem_id="tab-refine"):
                refine = build_refine_tab(demo_available, preset(default).prompt.vocabulary == "shapes-world")
            with gr.Tab("Fine-tune", id="finetune", elem_id="tab-finetune"):
                build_finetune_tab(demo, config, services.runs, default,
                                   [(picker, form.preset) for form in (t2v.form, i2v.form) for picker in form.lora_pickers])
            with gr.Tab("Queue", id="queue", elem_id="tab-queue"):
                # A CSV's rows take the Text → Video form's current settings.
                build_queue_tab(config, handler,
                                [t2v.negative_prompt, t2v.use_t2i2v, *t2v.form.request_inputs()])
            with gr.Tab("History", id="history", elem_id="tab-history") as history_tab:
                history = build_history_tab(config, ExtendHandler(config, services.cache))

        for tab in (t2v, i2v):  # the memory planner's line beside each Generate button
            wire_prediction(demo, tab.form, tab.result.prediction, memory, services.cache, config.ckpt_dir)
        # After each generation, and when the tab opens, the gallery re-reads the output folder.
        for tab in (t2v, i2v):
            tab.generated.success(**refresh_event_args(config, history))
        history_tab.select(**refresh_event_args(config, history))

        private = dict(api_visibility="private", queue=False)
        refine.send_t2v.click(lambda text: (text, gr.Tabs(selected="t2v")), refine.refined, [t2v.prompt, tabs], **private)
        refine.send_i2v.click(lambda text, image: (text, image if image else gr.update(), gr.Tabs(selected="i2v")),
                              [refine.refined, refine.image], [i2v.prompt, refs.image, tabs], **private)

        t2v_fill, i2v_fill = t2v.fill_outputs(), i2v.fill_outputs()
        ref_fill = [refs.cond_type, refs.image, refs.end_image, refs.ref_video]

        def reuse(settings: dict | None):
            keep = [gr.update() for _ in t2v_fill + i2v_fill + ref_fill]
            if not settings:
                return gr.update(), *keep
            request = GenerationRequest.from_sidecar(settings, folder=config.output_dir)
            if request.cond_type == "t2v":
                return gr.Tabs(selected="t2v"), *t2v.fill(request, config), *keep[len(t2v_fill):]
            return (gr.Tabs(selected="i2v"), *keep[:len(t2v_fill)], *i2v.fill(request, config),
                    *reference_updates(request))

        history.reuse.click(reuse, history.selected, [tabs, *t2v_fill, *i2v_fill, *ref_fill], **private)
        # A dropped mp4 (its settings are in its metadata) or sidecar fills the form as Reuse does. Queued:
        # its error / warning toasts reach the page only through the queue.
        for drop in (t2v_drop, i2v_drop):
            drop.upload(lambda path: reuse(dropped_settings(path)), drop, [tabs, *t2v_fill, *i2v_fill, *ref_fill],
                        api_visibility="private").then(lambda: None, None, drop, **private)  # ready for the next
        history.send_i2v.click(lambda index: (gr.Tabs(selected="i2v"), "i2v_head", *send_to_i2v(config, index)),
                               history.selected_index, [tabs, refs.cond_type, refs.image, i2v.prompt],
                               api_visibility="private")
        # Opening a video tab picks up LoRAs finished meanwhile (also from the command line).
        for tab_block, form in ((t2v_tab, t2v.form), (i2v_tab, i2v.form)):
            for picker in form.lora_pickers:
                tab_block.select(lambda value, name: gr.update(choices=lora_choices(config.runs_dir, keep=value or "",
                                                                                    preset=name)),
                                 [picker, form.preset], picker, **private)
        demo.load(**refresh_event_args(config, history))
    return demo, services


def reference_updates(request: GenerationRequest) -> list:
    """cond type + reference inputs of the I2V tab from a reused request (files that still exist)."""
    existing = [r for r in request.reference if r and Path(r).is_file()]
    cond_type = request.cond_type
    try:  # the labels of the video's own family (its preset may not exist here: fill_updates says so)
        choices = gr.update(choices=conditioning_choices(request.preset), value=cond_type)
    except UserError:
        choices = cond_type
    if cond_type.startswith("v2v"):
        return [choices, gr.update(), gr.update(), existing[0] if existing else gr.update()]
    first = existing[0] if existing else gr.update()
    last = existing[-1] if cond_type == "i2v_loop" and len(existing) > 1 else gr.update()
    return [choices, first, last, gr.update()]
