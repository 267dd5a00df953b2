"""What the Generate and Cancel buttons of both video tabs do: a request from the form is resolved
(errors at once), added to the persistent job queue (`opensora.job_queue`), and waited for while
the queue's worker runs it through `opensora.runner.run_job`; progress and cancel wired to Gradio.

Errors become a `gr.Error` message in the page (and an error for API clients) and one line in
the log; the app keeps serving. A cancelled run is not an error: the status line says where it
stopped. A job keeps going when its browser tab closes, and after a restart of the app.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import defaultdict

import gradio as gr

from app.config import AppConfig
from app.presets_info import check_selectable
from app.progress import format_seconds
from app.zerogpu import estimate_gpu_seconds, gpu_task, on_zero_gpu
from opensora.errors import UserError
from opensora.generation_settings import GenerationRequest, GenerationSettings
from opensora.io.outputs import IMAGE_FIELD
from opensora.job_queue import FINISHED, Job, JobQueue
from opensora.job_submit import enqueue, resolve_jobs
from opensora.pipeline_cache import PipelineCache
from opensora.queue_worker import QueueWorker, failure_message

log = logging.getLogger(__name__)
POLL_S = 0.25


def _gpu_duration(worker, *_):
    job = next((j for j in worker.queue.jobs() if j.state == "queued"), None)
    if job is None:
        return 60
    from opensora.presets import load_preset

    return estimate_gpu_seconds(load_preset(job.preset), GenerationSettings.from_dict(job.settings))


@gpu_task(duration=_gpu_duration)
def _run_next_on_gpu(worker: QueueWorker):
    # ZeroGPU attaches a GPU around exactly this call, made from the waiting event's thread.
    return worker.run_one()


def _session(request: gr.Request | None) -> str:
    return (request.session_hash if request is not None else None) or "no-session"


class GenerateHandler:
    def __init__(self, config: AppConfig, cache: PipelineCache, queue: JobQueue, worker: QueueWorker):
        self.config, self.cache, self.queue, self.worker = config, cache, queue, worker
        # On ZeroGPU a GPU exists only inside a request: waiting events run the queue themselves.
        self.inline = on_zero_gpu()
        self._session_jobs: dict[str, list[str]] = defaultdict(list)
        self._lock = threading.Lock()

    def cancel(self, request: gr.Request) -> str:
        with self._lock:
            ids = list(self._session_jobs.get(_session(request), []))
        flagged = 0
        for job_id in ids:
            try:
                job = self.queue.get(job_id)
            except UserError:
                continue
            if job.state not in FINISHED:
                self.worker.cancel(job_id)
                flagged += 1
        return "Cancelling: the run stops after the current step." if flagged else "Nothing to cancel."

    def session_jobs(self, request: gr.Request | None) -> list[str]:
        """Ids of the jobs this browser session added, oldest first (the live preview follows them)."""
        with self._lock:
            return list(self._session_jobs.get(_session(request), []))

    def submit(self, request: GenerationRequest, session_id: str) -> Job:
        """Resolve and queue a request (its references kept in the output folder); errors raise now."""
        return self.submit_all([("", request)], session_id)[0]

    def submit_all(self, requests: list[tuple[str, GenerationRequest]], session_id: str) -> list[Job]:
        """Queue (where, request) pairs: all resolved and checked first, so a bad one (its error
        prefixed with its `where`) adds none. The same path as `python -m opensora queue add`."""
        # The memory planner, at once (on ZeroGPU the GPU exists only inside the job).
        options = None if self.inline else self.cache.options
        jobs = resolve_jobs(requests, lambda name: check_selectable(name, self.config.ckpt_dir), options,
                            self.config.ckpt_dir)
        added = enqueue(self.queue, jobs)
        with self._lock:
            self._session_jobs[session_id].extend(job.id for job in added)
        self.worker.wake()
        return added

    def wait(self, job_id: str, report) -> Job:
        """Report the job's place in the queue, then its steps, until it ends."""
        while True:
            job = self.queue.get(job_id)
            if job.state in FINISHED:
                return job
            if job.state == "queued":
                if self.inline:
                    _run_next_on_gpu(self.worker)
                    continue
                waiting = [j for j in self.queue.jobs() if j.state in ("running", "queued")]
                position = self.queue.position(job_id)
                eta = self.queue.etas().get(job_id)
                report(None, f"queued: position {position} of {len(waiting)}"
                       + (f" · ETA {format_seconds(eta)}" if eta is not None else ""))
            else:
                progress = self.worker.progress.get(job_id)
                if progress is not None and progress.total:
                    sample = (f"sample {progress.sample + 1}/{progress.num_samples} · "
                              if progress.num_samples > 1 else "")
                    eta = progress.eta_s
                    report((progress.step, progress.total), f"{sample}step {progress.sample_step}/"
                           f"{progress.steps_per_sample}" + (f" · ETA {format_seconds(eta)}" if eta is not None else ""))
                elif progress is not None:
                    report(None, progress.message_text)
            time.sleep(POLL_S)

    def run(self, request: GenerationRequest, session: gr.Request | None, progress: gr.Progress):
        """-> (first video path, all video paths, status markdown, seed used)."""
        return self.run_with_image(request, session, progress)[:4]

    def run_with_image(self, request: GenerationRequest, session: gr.Request | None, progress: gr.Progress):
        """`run`'s four values, then the first video's text -> image -> video first frame (a PNG path)
        or None."""

        def report(fraction, desc):
            progress(fraction if fraction is not None else 0.0, desc=desc, unit="steps")

        try:
            job = self.submit(request, _session(session))
        except Exception as err:  # noqa: BLE001 - every failure must become a message, never a dead app
            kind, text = failure_message(err)
            raise gr.Error(text, duration=None, print_exception=False) from None
        job = self.wait(job.id, report)
        if job.state == "cancelled":
            return None, [], f"**Cancelled** ({job.error or 'before it started'}); nothing was written.", \
                gr.update(), None
        if job.state == "failed":
            raise gr.Error(job.error or "the job failed", duration=None, print_exception=False)
        paths = [str(self.config.output_dir / name) for name in job.outputs]
        sidecars = [_sidecar(path) for path in paths]
        seeds = [s.get("seed") for s in sidecars]
        status = (f"**Done:** {len(paths)} video{'s' if len(paths) > 1 else ''} in "
                  f"{(job.finished or 0) - (job.started or 0):.1f} s · seed{'s' if len(paths) > 1 else ''} "
                  f"{', '.join(str(s) for s in seeds)} · " + ", ".join(f"`{name}`" for name in job.outputs))
        status += "".join(f"\n\nNote: {notice}" for notice in job.notices)
        image = sidecars[0].get(IMAGE_FIELD) if sidecars else None
        return paths[0], paths, status, seeds[0], (str(self.config.output_dir / image) if image else None)


def _sidecar(video_path: str) -> dict:
    try:
        return json.loads(open(video_path[: -len(".mp4")] + ".json", encoding="utf-8").read())
    except (OSError, ValueError):
        return {}
