"""The Memory controls and the prediction line beside each Generate button.

The controls (memory profile, T5 quantisation, attention kernel) set the pipeline cache's
RuntimeOptions, so every later job of the app runs with them (a change reloads the model on the
next job). The line says, before anything loads, which profile the current settings would run
with and their predicted peak GPU memory and RAM here: the memory planner, asked exactly as the
job runner asks it (`opensora.runner.job_fit`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import gradio as gr

from app.presets_info import preset
from opensora.errors import UserError

QUANT_CHOICES = [("none (the model's dtype)", "none"), ("int8 (bitsandbytes)", "int8"), ("nf4 (bitsandbytes)", "nf4")]


@dataclass
class MemoryControls:
    offload: gr.Dropdown
    text_encoder_quant: gr.Dropdown
    attention: gr.Dropdown

    def inputs(self) -> list:
        return [self.offload, self.text_encoder_quant, self.attention]


def chosen_options(cache, offload: str | None, quant: str | None, attention: str | None):
    """The cache's options with the controls' values (empty ones: the defaults)."""
    return replace(cache.options, offload=offload or "auto", attention=attention or "auto",
                   text_encoder_quant=None if quant in (None, "", "none") else quant)


def build_memory_controls(cache) -> MemoryControls:
    from opensora.memory.profiles import load_memory_profiles
    from opensora.parallel.attention_backend import BACKENDS

    options = cache.options
    profiles = [("auto: the fastest that fits", "auto")]
    profiles += [(f"{name}: {p.description}", name) for name, p in load_memory_profiles().items()]
    with gr.Accordion("Memory", open=False, elem_classes=["memory-controls"]):
        with gr.Row():
            offload = gr.Dropdown(profiles, value=options.offload, label="Memory profile", scale=2,
                                  info="where the model's weights live while a video is made", elem_classes=["memory-profile"])
            quant = gr.Dropdown(QUANT_CHOICES, value=options.text_encoder_quant or "none", label="Text encoder (T5)",
                                info="8 or 4 bit: less memory, slightly different videos")
            attention = gr.Dropdown(["auto", *BACKENDS], value=options.attention, label="Attention kernel",
                                    info="auto: the fastest installed")
    controls = MemoryControls(offload, quant, attention)

    def apply(offload_value, quant_value, attention_value):
        cache.options = chosen_options(cache, offload_value, quant_value, attention_value)

    for control in controls.inputs():
        control.change(apply, controls.inputs(), None, api_visibility="private", queue=False)
    return controls


def prediction_text(cache, ckpt_dir, name: str, resolution: str, aspect_ratio: str, num_frames, num_samples,
                    offload: str, quant: str, attention: str) -> str:
    """One line: the profile the settings would run with and their predicted peak memory here."""
    from opensora.runner import job_fit

    try:
        p = preset(name)
        table = p.buckets.get(resolution) or p.buckets[p.sampler.resolution]
        aspect = aspect_ratio if aspect_ratio in table else p.sampler.aspect_ratio  # "auto": the reference's
        height, width = table.get(aspect) or next(iter(table.values()))
        options = chosen_options(cache, offload, quant, attention)
        fit = job_fit(p, options, int(num_frames), height, width, int(num_samples or 1), ckpt_dir)
    except UserError as err:
        return f"⚠ **Memory:** {err}"
    except (KeyError, TypeError, ValueError):  # a control half-updated after a preset switch
        return ""
    if fit is None:
        return f"**Memory:** no prediction for {p.label} yet (the planner covers Open-Sora 2.0 presets)"
    row = fit.chosen
    profile = f"auto → {row.profile}" if options.offload == "auto" else row.profile
    ram = f"{_size(row.ram_gib)} RAM" + (f" of {fit.ram_gib:.1f} GiB available" if fit.ram_gib is not None else "")
    gpu = "" if row.gpu_gib is None else f"{_size(row.gpu_gib)} GPU of {fit.vram_gib or 0:.1f} GiB · "
    return f"**Memory** ({profile}): predicted {gpu}{ram}"


def _size(gib: float) -> str:
    """MiB below 1 GiB (a small model's changes show), GiB with two decimals above."""
    return f"{gib * 1024:.0f} MiB" if gib < 1 else f"{gib:.2f} GiB"


def wire_prediction(demo: gr.Blocks, form, line: gr.Markdown, controls: MemoryControls, cache, ckpt_dir) -> None:
    """`line` follows the tab's preset, resolution, aspect ratio, frames and samples and the Memory
    controls (the component sizes are counted once per preset, then each update takes milliseconds)."""
    inputs = [form.preset, form.resolution, form.aspect_ratio, form.num_frames, form.num_samples, *controls.inputs()]

    def predict(*values):
        return prediction_text(cache, ckpt_dir, *values)

    for control in inputs:
        control.change(predict, inputs, line, api_visibility="private", queue=False, show_progress="hidden")
    demo.load(predict, inputs, line, api_visibility="private", queue=False, show_progress="hidden")
