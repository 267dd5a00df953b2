"""Prompt refinement tab: short idea (+ optional image) -> detailed prompt. API endpoint: `/refine`.

The endpoint comes from the environment only (OPENAI_BASE_URL / OPENAI_API_KEY, as for the CLI):
letting page visitors type a server URL would let them make this server send requests, and the
key, anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from app.reference_image import ReferenceImage
from opensora.errors import UserError
from opensora.refine import RefineSettings, prepare_prompt

MODE_CHOICES = [
    ("Video caption (text → video)", "t2v"),
    ("First-frame caption (image models)", "t2i"),
    ("Describe the motion for this image (image → video)", "i2v"),
]


@dataclass
class RefineTab:
    image: gr.Image
    refined: gr.Textbox
    send_t2v: gr.Button
    send_i2v: gr.Button


def server_line() -> str:
    settings = RefineSettings.from_env()
    if not settings.configured:
        return ("No refinement server configured (set `OPENAI_BASE_URL` for a local OpenAI-compatible server, "
                "or `OPENAI_API_KEY`, and restart): the offline refiner is used.")
    return f"Refinement server: `{settings.display_url()}`, model `{settings.model}`."


def refine(prompt: str, image: str | None, mode: str, motion_score: str, shapes_world: bool):
    """Refine a prompt. Returns (original, refined, motion score line, notes)."""
    if mode == "i2v" and not image and not shapes_world:
        raise gr.Error("mode 'image → video' needs an image: upload one, or pick another mode", print_exception=False)
    error = None
    try:
        prepared = prepare_prompt(prompt, refine=True, motion_score=motion_score or "4", mode=mode,
                                  ref_image=image if mode == "i2v" else None,
                                  vocabulary="shapes-world" if shapes_world else None)
    except UserError as err:
        error = str(err)
    if error is not None:
        raise gr.Error(error, print_exception=False)
    motion = f"{prepared.motion_score} ({prepared.motion_source})"
    notes = "\n\n".join(f"Note: {n}" for n in prepared.notices) or f"refined by: {prepared.refiner}"
    return prepared.original, prepared.text, motion, notes


def build_refine_tab(demo_available: bool, demo_loaded: bool) -> RefineTab:
    """`demo_available`: offer the demo model's vocabulary; `demo_loaded`: tick it (the app runs the demo)."""
    gr.Markdown(server_line())
    with gr.Row():
        with gr.Column():
            prompt = gr.Textbox(label="Your idea", lines=3, placeholder="a cat on a roof at night")
            image = ReferenceImage(label="Image (optional, for image → video)", type="filepath", height=200)
            mode = gr.Radio(MODE_CHOICES, value="t2v", label="Refine for")
            with gr.Row():
                motion = gr.Dropdown(["dynamic"] + [str(i) for i in range(1, 16)], value="4", label="Motion score",
                                     info="dynamic asks the server")
                shapes = gr.Checkbox(demo_loaded, label="Demo model vocabulary (shapes world)", visible=demo_available,
                                     info="map the idea onto the only words the demo model knows")
            button = gr.Button("Refine", variant="primary")
        with gr.Column():
            before = gr.Textbox(label="Before", interactive=False, lines=3)
            after = gr.Textbox(label="After", lines=6, elem_classes=["refined-prompt"])
            motion_out = gr.Textbox(label="Motion score", interactive=False)
            notes = gr.Markdown(label="notes")
            with gr.Row():
                send_t2v = gr.Button("Send to Text → Video")
                send_i2v = gr.Button("Send to Image → Video")
    button.click(refine, [prompt, image, mode, motion, shapes], [before, after, motion_out, notes],
                 api_name="refine", concurrency_limit=4)
    return RefineTab(image, after, send_t2v, send_i2v)
