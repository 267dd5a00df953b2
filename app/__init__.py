"""Open-Sora Studio's Gradio UI: one module per tab, no model code.

Every action calls the same objects as the CLI: `OpenSoraPipeline` (via `app.generation`),
`opensora.refine.prepare_prompt` and `python -m training finetune` (as a subprocess).
Entry point: `launch.py` -> `app.ui.build_app(config)`.
"""
