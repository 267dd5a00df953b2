"""Queue tab: every job of the output folder's persistent queue (position, state, settings, progress,
ETA), with cancel / move up / remove, and a CSV upload that adds one job per row.

A CSV's rows take the Text → Video form's current settings: what a user just set up (and maybe
tried with Generate) is what the batch should use. A row's own `seed`, `cond_type`, `ref` and
`preset` columns win; a row naming another preset than the form's gets that preset's defaults (the
form's resolution, frames, steps... belong to the form's preset), keeping only the form's
preset-free settings. Every row is checked before any is added: one bad row adds none.
"""

from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path

import gradio as gr
import pandas as pd

from app.config import AppConfig
from app.generate_handler import GenerateHandler
from app.progress import format_seconds
from app.settings_form import request_from_form
from opensora.errors import UserError
from opensora.generation_settings import AUTO_ASPECT, GenerationRequest
from opensora.io.job_csv import requests_from_csv
from opensora.job_queue import JobQueue

COLUMNS = ["position", "state", "progress", "ETA", "job", "settings"]
POLL_S = 1.0
CSV_SESSION = "queue-csv"  # CSV jobs are the Queue tab's: the video tabs' Cancel and live preview leave them alone
# What a row naming another preset keeps from the form: settings that mean the same for every preset.
PRESET_FREE_FIELDS = ("negative_prompt", "noise_seed", "num_samples", "refine")
CSV_HELP = (
    "One job per row; columns: `text` (required), `seed`, `cond_type`, `ref` (absolute paths; `first;last` for "
    "i2v_loop), `preset` — the format `python -m opensora generate --csv` reads. **Settings come from the Text → "
    "Video tab as it is set now** (preset, resolution, frames, steps, guidance, seed...); a row's own columns win. "
    "A row naming another preset gets that preset's defaults, with the form's negative prompt, samples and "
    "prompt refinement. A bad row is named and nothing is added."
)


def csv_requests(path: str, form: GenerationRequest) -> list[tuple[str, GenerationRequest]]:
    """(where, request) per row of an uploaded CSV, on top of the Text → Video form's request."""
    common = {f.name: getattr(form, f.name) for f in fields(form) if f.name not in ("prompt", "cond_type", "reference")}
    rows = requests_from_csv(path, preset_column=True, other_preset_keeps=PRESET_FREE_FIELDS, name=Path(path).name,
                             cond_type="t2v", reference=[], **common)
    # A row with a reference follows its shape (the Image → Video tab's "auto"); FLUX first frames are for t2v.
    return [(where, request if request.cond_type == "t2v" else
             replace(request, use_t2i2v=None, aspect_ratio=AUTO_ASPECT)) for where, request in rows]


def queue_rows(queue: JobQueue, handler: GenerateHandler) -> pd.DataFrame:
    progress = handler.worker.progress
    done_steps = {job_id: p.step for job_id, p in progress.items()}
    etas = queue.etas(done_steps)
    rows, position = [], 0
    for job in queue.jobs():
        if job.state == "queued":
            position += 1
        running = progress.get(job.id) if job.state == "running" else None
        step = f"{running.step}/{running.total}" if running is not None and running.total else ""
        if job.state == "done":
            step = ", ".join(job.outputs)
        elif job.state in ("failed", "cancelled"):
            step = (job.error or "").splitlines()[0][:80] if job.error else ""
        eta = etas.get(job.id)
        rows.append([position if job.state == "queued" else "", job.state + (" (cancelling)" if job.cancel_requested
                                                                              and job.state == "running" else ""),
                     step, format_seconds(eta) if eta is not None else "", job.id, job.summary])
    return pd.DataFrame(rows, columns=COLUMNS)


def build_queue_tab(config: AppConfig, handler: GenerateHandler, t2v_inputs: list):
    """t2v_inputs: the Text → Video tab's negative prompt, FLUX toggle and `SettingsForm.request_inputs()`."""
    queue = handler.queue
    gr.Markdown(f"Jobs of `{config.output_dir}` (kept in its `queue/` folder: they survive a restart). "
                "Select a job to act on it.")
    table = gr.Dataframe(queue_rows(queue, handler), interactive=False, wrap=True, elem_classes=["queue-table"])
    with gr.Row():
        job_id = gr.Textbox(label="Selected job", interactive=False, elem_classes=["queue-selected"], scale=2)
        cancel = gr.Button("Cancel job", variant="stop", size="sm")
        move_up = gr.Button("Move up", size="sm")
        remove = gr.Button("Remove", size="sm")
    note = gr.Markdown("", elem_classes=["queue-note"])
    with gr.Accordion("Add jobs from CSV", open=False):
        gr.Markdown(CSV_HELP, elem_classes=["queue-csv-help"])
        upload = gr.File(label="CSV file", file_types=[".csv"], type="filepath", elem_classes=["queue-csv"])
        add = gr.Button("Add to the queue", variant="primary", elem_classes=["queue-csv-add"])

    def select(frame: pd.DataFrame, evt: gr.SelectData):
        row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        return frame.iloc[row]["job"] if row is not None and row < len(frame) else ""

    def act(action, selected: str):
        if not selected:
            return "Select a job first.", queue_rows(queue, handler)
        try:
            message = action(selected)
        except UserError as err:
            message = str(err)
        return message, queue_rows(queue, handler)

    def do_cancel(selected):
        job = handler.worker.cancel(selected)
        return f"`{selected}`: " + ("stops after the current step." if job.state == "running" else job.state)

    def do_move(selected):
        queue.move_up(selected)
        handler.worker.wake()
        return f"`{selected}` moved up."

    def do_remove(selected):
        queue.remove(selected)
        return f"`{selected}` removed."

    def add_csv(path: str | None, negative_prompt: str, use_t2i2v: bool, *form_values):
        if not path:
            return "Upload a CSV first.", queue_rows(queue, handler)
        try:
            form = request_from_form(list(form_values), prompt="", negative_prompt=negative_prompt or "",
                                     cond_type="t2v", use_t2i2v=bool(use_t2i2v))
            jobs = handler.submit_all(csv_requests(path, form), CSV_SESSION)
        except UserError as err:
            return f"Nothing added: {err}", queue_rows(queue, handler)
        return (f"Added {len(jobs)} job{'s' if len(jobs) != 1 else ''} from `{Path(path).name}`.",
                queue_rows(queue, handler))

    private = dict(api_visibility="private")
    table.select(select, table, job_id, queue=False, **private)
    cancel.click(lambda s: act(do_cancel, s), job_id, [note, table], queue=False, **private)
    move_up.click(lambda s: act(do_move, s), job_id, [note, table], queue=False, **private)
    remove.click(lambda s: act(do_remove, s), job_id, [note, table], queue=False, **private)
    add.click(add_csv, [upload, *t2v_inputs], [note, table], api_name="queue-add-csv")
    gr.Timer(POLL_S).tick(lambda: queue_rows(queue, handler), None, table, queue=False, show_progress="hidden",
                          **private)
