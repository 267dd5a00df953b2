"""Queue tab: every job of the output folder's persistent queue (position, state, settings, progress,
ETA), with cancel / move up / remove, and a CSV upload that adds one job per row."""

from __future__ import annotations

import gradio as gr
import pandas as pd

from app.config import AppConfig
from app.generate_handler import GenerateHandler
from app.progress import format_seconds
from opensora.errors import UserError
from opensora.io.job_csv import requests_from_csv
from opensora.job_queue import JobQueue

COLUMNS = ["position", "state", "progress", "ETA", "job", "settings"]
POLL_S = 1.0


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


def build_queue_tab(config: AppConfig, handler: GenerateHandler, default_preset: str):
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
    with gr.Accordion("Add jobs from a CSV", open=False):
        gr.Markdown("Columns: `text` (required), `ref`, `cond_type`, `seed`; other settings are the preset's "
                    "defaults. Relative `ref` paths are read from the folder of a CSV given by path.")
        upload = gr.File(label="CSV file", file_types=[".csv"], type="filepath", elem_classes=["queue-csv"])
        add = gr.Button("Add to the queue", variant="primary")

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

    def add_csv(path: str | None, request: gr.Request):
        if not path:
            return "Upload a CSV first.", queue_rows(queue, handler)
        try:
            requests = requests_from_csv(path, preset=default_preset)
            jobs = [handler.submit(r, getattr(request, "session_hash", None) or "no-session") for _, r in requests]
        except UserError as err:
            return str(err), queue_rows(queue, handler)
        return f"Added {len(jobs)} job{'s' if len(jobs) != 1 else ''}.", queue_rows(queue, handler)

    private = dict(api_visibility="private")
    table.select(select, table, job_id, queue=False, **private)
    cancel.click(lambda s: act(do_cancel, s), job_id, [note, table], queue=False, **private)
    move_up.click(lambda s: act(do_move, s), job_id, [note, table], queue=False, **private)
    remove.click(lambda s: act(do_remove, s), job_id, [note, table], queue=False, **private)
    add.click(add_csv, upload, [note, table], api_name="queue-add-csv")
    gr.Timer(POLL_S).tick(lambda: queue_rows(queue, handler), None, table, queue=False, show_progress="hidden",
                          **private)
