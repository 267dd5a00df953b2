"""Fine-tune tab: start / stop / resume `python -m training finetune`, with a live log, loss plot
and progress. Finished LoRAs show up in the video tabs' LoRA pickers.
API endpoints: `/finetune-start`, `/finetune-stop`, `/finetune-resume`."""

from __future__ import annotations

import html

import gradio as gr
import pandas as pd

from app.config import AppConfig
from app.presets_info import availability
from app.progress import format_seconds
from app.training_runs import RunSpec, RunView, TrainingRuns, config_for_preset, lora_choices, training_configs
from opensora.errors import UserError

POLL_S = 1.0


def status_html(view: RunView) -> str:
    if not view.name:
        return "<p>No run selected.</p>"
    total = max(view.total_steps, 1)
    eta = f" · ETA {format_seconds(view.eta_s)}" if view.eta_s is not None else ""
    lora = f" · LoRA: <code>{html.escape(str(view.lora))}</code>" if view.lora else ""
    message = f"<br>{html.escape(view.message)}" if view.message else ""
    return (
        f'<div class="finetune-status" data-state="{view.state}">'
        f"<b>{html.escape(view.name)}</b>: {view.state} · step {view.step}/{view.total_steps or '?'}{eta}{lora}"
        f'<br><progress value="{view.step}" max="{total}" style="width:100%"></progress>{message}</div>'
    )


def loss_frame(view: RunView) -> pd.DataFrame:
    rows = [(m["step"], m["loss"]) for m in view.metrics if isinstance(m.get("loss"), (int, float))]
    return pd.DataFrame(rows, columns=["step", "loss"])


def build_finetune_tab(demo: gr.Blocks, config: AppConfig, runs: TrainingRuns, default_preset: str,
                       lora_pickers: list) -> None:
    """`lora_pickers`: the video tabs' LoRA dropdowns, refreshed when a LoRA appears."""
    presets = availability(config.ckpt_dir).selectable
    gr.Markdown(
        f"Trains with `python -m training finetune` in a separate process; runs live in `{config.runs_dir}`. "
        "Dataset: a CSV (`path,text`) or a folder of videos, each with a same-name `.txt` caption."
    )
    with gr.Row():
        with gr.Column():
            with gr.Row():
                name = gr.Textbox(label="Run name", value=f"{default_preset}-lora", elem_classes=["run-name"])
                existing = gr.Dropdown(runs.run_names(), value=None, label="Existing runs", allow_custom_value=False)
            dataset = gr.Textbox(label="Dataset (CSV file or folder)", placeholder="data/my_clips/",
                                 elem_classes=["dataset-path"])
            configs = training_configs()
            config_name = config_for_preset(default_preset, configs)
            first = configs.get(config_name)
            with gr.Row():
                preset = gr.Dropdown(presets, value=default_preset, label="Preset")
                settings = gr.Dropdown(list(configs), value=config_name, label="Training settings",
                                     info="presets/train-NAME.toml; the fields here override it")
            with gr.Row():
                method = gr.Radio(["LoRA", "Full"], value="Full" if first and first.mode == "full" else "LoRA",
                                  label="Method")
                rank = gr.Dropdown([4, 8, 16, 32, 64, 128], value=first.lora_rank if first else 16, label="LoRA rank",
                                   allow_custom_value=True)
                steps = gr.Number(value=first.steps if first else 100, precision=0, minimum=1, label="Steps")
                lr = gr.Number(value=first.lr if first else 1e-4, minimum=0, label="Learning rate")
            with gr.Row():
                start = gr.Button("Start", variant="primary", elem_classes=["finetune-start"])
                stop = gr.Button("Stop", variant="stop", elem_classes=["finetune-stop"])
                resume = gr.Button("Resume", elem_classes=["finetune-resume"])
            note = gr.Markdown(label="message", elem_classes=["finetune-note"])
        with gr.Column():
            status = gr.HTML(status_html(RunView(name="", state="not started")))
            plot = gr.LinePlot(loss_frame(RunView(name="", state="")), x="step", y="loss", title="Loss", height=240)
            log = gr.Textbox(label="Log (tail)", lines=14, max_lines=14, autoscroll=True, interactive=False,
                             elem_classes=["finetune-log"])
    timer = gr.Timer(POLL_S, active=False)
    known = gr.State([value for _, value in lora_choices(config.runs_dir)])

    def show(run_name: str, known_loras: list):
        view = runs.view(run_name) if run_name else RunView(name="", state="not started")
        choices = lora_choices(config.runs_dir)
        values = [value for _, value in choices]
        picker = gr.update(choices=choices) if values != known_loras else gr.update()
        return (status_html(view), loss_frame(view), view.log_tail, gr.Timer(active=view.active), values,
                *[picker for _ in lora_pickers])

    watch_outputs = [status, plot, log, timer, known, *lora_pickers]

    def defaults(name: str | None):
        # Picking other training settings shows their values (the user may still change them).
        d = configs.get(name or "")
        if d is None:
            return gr.update(), gr.update(), gr.update(), gr.update()
        return "Full" if d.mode == "full" else "LoRA", d.lora_rank, d.steps, d.lr

    def preset_changed(name: str):
        chosen = config_for_preset(name, configs)
        return chosen, *defaults(chosen)

    preset.input(preset_changed, preset, [settings, method, rank, steps, lr], api_visibility="private", queue=False)
    settings.input(defaults, settings, [method, rank, steps, lr], api_visibility="private", queue=False)

    def start_run(run_name: str, dataset: str, preset: str, training_settings: str | None, method: str,
                  lora_rank: int, steps: int, lr: float):
        """Start a fine-tune run. Returns a status line."""
        error = None
        try:
            spec = RunSpec(name=(run_name or "").strip(), preset=preset, data=dataset or "",
                           lora_rank=0 if method == "Full" else int(lora_rank), steps=int(steps), lr=float(lr),
                           config=training_settings or None)
            if preset not in presets:
                raise UserError(f"preset {preset!r} is not available here; pick one of {', '.join(presets)}")
            runs.start(spec)
        except UserError as err:
            error = str(err)
        if error is not None:
            raise gr.Error(error)
        return f"started {spec.name}"

    def stop_run(run_name: str):
        """Stop a run cleanly (checkpoint + status "stopped")."""
        return f"stopping {run_name}" if runs.stop(run_name) else f"{run_name} is not running in this app"

    def resume_run(run_name: str):
        """Resume a stopped run (the same command + --resume auto)."""
        error = None
        try:
            runs.resume((run_name or "").strip())
        except UserError as err:
            error = str(err)
        if error is not None:
            raise gr.Error(error)
        return f"resumed {run_name}"

    for button, fn, inputs, api in ((start, start_run, [name, dataset, preset, settings, method, rank, steps, lr], "finetune-start"),
                                    (stop, stop_run, [name], "finetune-stop"),
                                    (resume, resume_run, [name], "finetune-resume")):
        button.click(fn, inputs, note, api_name=api).success(
            show, [name, known], watch_outputs, api_visibility="private", show_progress="hidden").then(
            lambda: gr.update(choices=runs.run_names()), None, existing, api_visibility="private")
    existing.input(lambda run: run, existing, name, api_visibility="private", queue=False).then(
        show, [name, known], watch_outputs, api_visibility="private", show_progress="hidden")
    timer.tick(show, [name, known], watch_outputs, api_visibility="private", show_progress="hidden")

    def on_load(run_name: str, known_loras: list):
        # A reloaded page keeps showing the run that is training now. Otherwise the name is left
        # alone: this runs after the page is up, and a name typed meanwhile must survive it.
        running = runs.running_name()
        return running or gr.update(), *show(running or run_name, known_loras)

    demo.load(on_load, [name, known], [name, *watch_outputs], api_visibility="private", show_progress="hidden")

