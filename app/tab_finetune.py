"""Fine-tune tab: start / stop / resume `python -m training finetune`, with a live log, loss plot
and progress. Finished LoRAs show up in the video tabs' LoRA pickers.
API endpoints: `/finetune-start`, `/finetune-stop`, `/finetune-resume`."""

from __future__ import annotations

import html
from pathlib import Path

import gradio as gr
from gradio.utils import get_upload_folder

from app.config import AppConfig
from app.loss_plot import loss_svg
from app.presets_info import availability
from app.progress import format_seconds
from app.training_runs import (
    RunSpec,
    RunView,
    TrainingRuns,
    check_dataset_location,
    config_for_preset,
    lora_choices,
    training_configs,
)
from opensora.errors import UserError

POLL_S = 1.0
DATA_DIR = Path("data")  # where the README's `render-shapes --out data/...` writes
INITS = [("the preset's weights (fine-tune)", "preset"), ("random weights (train from scratch)", "random")]
# Newest line at the bottom and in view: a column-reverse box starts scrolled to its end.
LOG_BOX = ('<div class="finetune-log-box" style="height: 20em; overflow-y: auto; display: flex; '
           'flex-direction: column-reverse; border: 1px solid #8884; border-radius: 6px; padding: 0 8px">'
           '<pre style="margin: 0; white-space: pre-wrap; font-size: 0.8em">{}</pre></div>')


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


def loss_plot_html(view: RunView) -> str:
    rows = [(int(m["step"]), float(m["loss"])) for m in view.metrics
            if isinstance(m.get("step"), int) and isinstance(m.get("loss"), (int, float))]
    return loss_svg([s for s, _ in rows], [v for _, v in rows])


def log_html(view: RunView) -> str:
    return LOG_BOX.format(html.escape(view.log_tail or "(no log yet)"))


def dataset_roots(config: AppConfig) -> list[Path]:
    """Where datasets may come from: the runs folder, ./data, and files uploaded to this app."""
    return [Path(config.runs_dir).resolve(), DATA_DIR.resolve(), Path(get_upload_folder()).resolve()]


def build_finetune_tab(demo: gr.Blocks, config: AppConfig, runs: TrainingRuns, default_preset: str,
                       lora_pickers: list) -> None:
    """`lora_pickers`: (LoRA dropdown, preset dropdown) of each video tab; a new LoRA appears in
    the pickers whose preset it was made for."""
    presets = availability(config.ckpt_dir).trainable
    if default_preset not in presets and presets:  # e.g. an Open-Sora 1.2 preset: generation only
        default_preset = presets[0]
    roots = dataset_roots(config)
    gr.Markdown(
        f"Trains with `python -m training finetune` in a separate process; runs live in `{config.runs_dir}`. "
        f"Dataset: a CSV (`path,text`) or a folder of videos, each with a same-name `.txt` caption, inside "
        f"`{config.runs_dir}` or `{DATA_DIR}` (e.g. `python -m training render-shapes --out data/shapes --num 16 --frames 9`, "
        "then `data/shapes/data.csv`)."
    )
    configs = training_configs()
    config_name = config_for_preset(default_preset, configs)
    first = configs.get(config_name)
    with gr.Row():
        with gr.Column():
            with gr.Row():
                name = gr.Textbox(label="Run name", value=f"{default_preset}-lora", elem_classes=["run-name"])
                existing = gr.Dropdown(runs.run_names(), value=None, label="Existing runs", allow_custom_value=False,
                                       elem_classes=["existing-runs"])
            dataset = gr.Textbox(label="Dataset (CSV file or folder)", placeholder="data/shapes/data.csv",
                                 elem_classes=["dataset-path"])
            with gr.Row():
                preset = gr.Dropdown(presets, value=default_preset, label="Preset")
                settings = gr.Dropdown([(d.label(n), n) for n, d in configs.items()], value=config_name,
                                       label="Training settings", info="presets/train-NAME.toml; the fields here override it")
            init = gr.Radio(INITS, value=first.init if first else "preset", label="Start from",
                            info="training from scratch needs Method Full and many steps")
            with gr.Row():
                method = gr.Radio(["LoRA", "Full"], value=method_of(first), label="Method")
                rank = gr.Dropdown([4, 8, 16, 32, 64, 128], value=first.lora_rank if first else 16, label="LoRA rank",
                                   allow_custom_value=True, visible=method_of(first) == "LoRA")
                steps = gr.Number(value=first.steps if first else 100, precision=0, minimum=1, label="Steps")
                lr = gr.Number(value=first.lr if first else 1e-4, minimum=0, label="Learning rate")
            with gr.Row():
                start = gr.Button("Start", variant="primary", elem_classes=["finetune-start"])
                stop = gr.Button("Stop", variant="stop", elem_classes=["finetune-stop"])
                resume = gr.Button("Resume", elem_classes=["finetune-resume"])
            note = gr.Markdown(label="message", elem_classes=["finetune-note"])
        with gr.Column():
            status = gr.HTML(status_html(RunView(name="", state="not started")))
            plot = gr.HTML(loss_plot_html(RunView(name="", state="")), elem_classes=["finetune-loss"])
            gr.Markdown("**Log** (newest line last)")
            log = gr.HTML(log_html(RunView(name="", state="")), elem_classes=["finetune-log"])
    timer = gr.Timer(POLL_S, active=False)
    known = gr.State([value for _, value in lora_choices(config.runs_dir)])
    private = dict(api_visibility="private", queue=False)

    def show(run_name: str, known_loras: list, *picker_presets: str):
        view = runs.view(run_name) if run_name else RunView(name="", state="not started")
        values = [value for _, value in lora_choices(config.runs_dir)]
        changed = values != known_loras
        pickers = [gr.update(choices=lora_choices(config.runs_dir, preset=p)) if changed else gr.update()
                   for p in picker_presets]
        return (status_html(view), loss_plot_html(view), log_html(view), gr.Timer(active=view.active), values,
                *pickers)

    watch_outputs = [status, plot, log, timer, known, *[picker for picker, _ in lora_pickers]]
    watch_inputs = [name, known, *[preset_of for _, preset_of in lora_pickers]]

    def defaults(name: str | None):
        # Picking other training settings shows their values (the user may still change them).
        d = configs.get(name or "")
        if d is None:
            return gr.update(), gr.update(), gr.update(), gr.update(), gr.update()
        return d.init, method_of(d), d.lora_rank, d.steps, d.lr

    def preset_changed(name: str):
        chosen = config_for_preset(name, configs)
        return chosen, *defaults(chosen)

    fields = [init, method, rank, steps, lr]
    preset.input(preset_changed, preset, [settings, *fields], **private)
    settings.input(defaults, settings, fields, **private)
    # From scratch trains every weight (a LoRA needs trained weights to adapt); the two follow each other.
    init.input(lambda value, m: "Full" if value == "random" else m, [init, method], method, **private)
    method.input(lambda m, value: "preset" if m == "LoRA" else value, [method, init], init, **private)
    method.change(lambda m: gr.update(visible=m == "LoRA"), method, rank, **private)

    def start_run(run_name: str, dataset: str, preset: str, training_settings: str | None, method: str,
                  lora_rank: int, steps: int, lr: float, init: str = "preset"):
        """Start a fine-tune run. Returns a status line."""
        error = None
        try:
            spec = RunSpec(name=(run_name or "").strip(), preset=preset, data=dataset or "",
                           lora_rank=0 if method == "Full" else int(lora_rank), steps=int(steps), lr=float(lr),
                           config=training_settings or None, init=init or "preset")
            if preset not in presets:
                raise UserError(f"preset {preset!r} is not available here; pick one of {', '.join(presets)}")
            check_dataset_location(spec.data, roots)
            runs.start(spec)
        except UserError as err:
            error = str(err)
        if error is not None:
            raise gr.Error(error, print_exception=False)
        return f"started {spec.name}"

    def stop_run(run_name: str):
        """Stop a run cleanly (checkpoint + status "stopped")."""
        return f"stopping {run_name}" if runs.stop(run_name) else f"{run_name} is not training"

    def resume_run(run_name: str):
        """Resume a stopped run (the same command + --resume auto)."""
        error = None
        try:
            runs.resume((run_name or "").strip())
        except UserError as err:
            error = str(err)
        if error is not None:
            raise gr.Error(error, print_exception=False)
        return f"resumed {run_name}"

    run_names = gr.State([])

    def refresh_runs(shown: list):
        names = runs.run_names()
        return (gr.update(choices=names) if names != shown else gr.update()), names

    start_inputs = [name, dataset, preset, settings, method, rank, steps, lr, init]
    for button, fn, inputs, api in ((start, start_run, start_inputs, "finetune-start"),
                                    (stop, stop_run, [name], "finetune-stop"),
                                    (resume, resume_run, [name], "finetune-resume")):
        button.click(fn, inputs, note, api_name=api).success(
            show, watch_inputs, watch_outputs, api_visibility="private", show_progress="hidden").then(
            refresh_runs, run_names, [existing, run_names], api_visibility="private")
    # Opening and closing the list without a pick sends None: the typed name stays.
    existing.input(lambda run: run or gr.update(), existing, name, **private).then(
        show, watch_inputs, watch_outputs, api_visibility="private", show_progress="hidden")
    timer.tick(show, watch_inputs, watch_outputs, api_visibility="private", show_progress="hidden")

    def on_load(run_name: str, known_loras: list, *picker_presets: str):
        # A reloaded page lists the runs on disk and keeps showing the run that trains now (also one
        # started before an app restart). Otherwise the name is left alone: this runs after the page
        # is up, and a name typed meanwhile must survive it.
        running = runs.running_name()
        names = runs.run_names()
        return (running or gr.update(), *show(running or run_name, known_loras, *picker_presets),
                gr.update(choices=names), names)

    demo.load(on_load, watch_inputs, [name, *watch_outputs, existing, run_names], api_visibility="private",
              show_progress="hidden")


def method_of(defaults) -> str:
    return "Full" if defaults is not None and defaults.mode == "full" else "LoRA"
