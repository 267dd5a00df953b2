"""The result column's live preview: the session's running job's newest preview (an animated WebP)
(opensora/preview: the predicted clean video every few steps, projected without a VAE decode).

A private generator event of its own follows the job while the Generate event waits for it, so
the generate endpoints keep returning the same values to API clients.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
import time
from pathlib import Path

import gradio as gr

from opensora.errors import UserError
from opensora.job_queue import FINISHED

FINISHED_OR_REMOVED = (*FINISHED, "removed")
POLL_S = 0.25
WAIT_FOR_JOB_S = 30.0  # a click whose request fails before it is queued leaves nothing to follow


def preview_dir() -> Path:
    """This app's folder for preview files, removed at exit: in the system temp folder, which Gradio
    may serve from (each job's PreviewFiles keep only the newest few)."""
    folder = Path(tempfile.mkdtemp(prefix="opensora-preview-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def preview_image() -> gr.Image:
    return gr.Image(label="Live preview", type="filepath", interactive=False, visible=False, height=180, scale=1,
                    show_label=True, elem_classes=["result-preview"])


def followed_job(handler, request, ended: set[str]) -> str | None:
    """The job of `request`'s browser session to show: the running one, else the next queued; None
    when all have ended. `ended` collects the ids seen finished (not read again)."""
    jobs = {job_id: job_state(handler, job_id) for job_id in handler.session_jobs(request) if job_id not in ended}
    ended.update(job_id for job_id, state in jobs.items() if state in FINISHED_OR_REMOVED)
    running = [job_id for job_id, state in jobs.items() if state == "running"]
    queued = [job_id for job_id, state in jobs.items() if state == "queued"]
    return (running + queued)[0] if running or queued else None


def job_state(handler, job_id: str) -> str:
    """The job's state; "removed" (counted as finished) once the Queue tab removed it."""
    try:
        return handler.queue.get(job_id).state
    except UserError:
        return "removed"


def latest_preview(handler, job_id: str) -> Path | None:
    progress = handler.worker.progress.get(job_id)
    return getattr(getattr(progress, "preview", None), "latest", None)


def follow_previews(handler, request, poll_s: float = POLL_S, wait_for_job_s: float = WAIT_FOR_JOB_S):
    """Yields updates of the preview image: cleared at the start, then each new preview of the session's jobs
    while they run; hidden when the last one is done (its video replaces it), while a cancelled or
    failed job's last preview stays."""
    yield gr.update(value=None, visible=False)
    deadline = time.monotonic() + wait_for_job_s
    shown = last_job = None
    ended: set[str] = set()
    while True:
        job_id = followed_job(handler, request, ended)
        if job_id is None and (last_job is not None or time.monotonic() > deadline):
            break
        last_job = job_id or last_job
        path = None if last_job is None else latest_preview(handler, last_job)
        if path is not None and path != shown:
            shown = path
            yield gr.update(value=str(path), visible=True)
        time.sleep(poll_s)
    if last_job is None:
        return
    path = latest_preview(handler, last_job)  # written between the last poll and the job's end
    if job_state(handler, last_job) == "done":
        yield gr.update(visible=False)
    elif path is not None and path != shown:
        yield gr.update(value=str(path), visible=True)
