"""Runs the persistent queue's jobs one at a time in this process, through the one job runner.

The app starts one worker thread beside its UI (jobs go on with no browser attached, and after a
restart); `python -m opensora queue run` runs one in the foreground until the queue is empty.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from dataclasses import dataclass, field

from opensora import runner
from opensora.errors import UserError
from opensora.generation_settings import GenerationSettings
from opensora.job_queue import Job, JobQueue
from opensora.preview.files import PreviewFiles

log = logging.getLogger(__name__)


@dataclass
class JobProgress:
    """What the running job is doing, for whoever shows it (the runner's Progress protocol)."""

    job_id: str
    message_text: str = "starting"
    step: int = 0  # steps done over all samples
    total: int = 0
    sample_step: int = 0  # steps done in the current sample
    steps_per_sample: int = 0
    num_samples: int = 1
    sample: int = 0
    started: float = field(default_factory=time.monotonic)
    steps_started: float | None = None
    latent: object = None  # the newest latent, for previews
    # The runner's preview hook: an opensora.preview.files.PreviewFiles (its `latest` file is what the app
    # shows), or None for no previews (a headless `queue run`).
    preview: object = None

    def message(self, text: str) -> None:
        self.message_text = text

    def begin(self, num_samples: int) -> None:
        self.num_samples, self.sample, self.steps_started = num_samples, 0, time.monotonic()

    def __call__(self, step: int, total: int, latent=None) -> None:
        if step == 0 and self.step > 0:
            self.sample += 1
        self.step = self.sample * total + step + 1
        self.total = total * self.num_samples
        self.sample_step, self.steps_per_sample = step + 1, total
        self.latent = latent

    @property
    def eta_s(self) -> float | None:
        per_step = self.seconds_per_step
        return None if per_step is None else per_step * (self.total - self.step)

    @property
    def seconds_per_step(self) -> float | None:
        if self.steps_started is None or self.step == 0:
            return None
        return (time.monotonic() - self.steps_started) / self.step


class QueueCancel:
    """The runner's cancel event for a job: this process's flag, or the job file's request
    (another process's Cancel), read at most twice a second."""

    def __init__(self, queue: JobQueue, job_id: str):
        self.queue, self.job_id = queue, job_id
        self._set, self._checked = False, 0.0

    def set(self) -> None:
        self._set = True

    def is_set(self) -> bool:
        now = time.monotonic()
        if not self._set and now - self._checked > 0.5:
            self._checked = now
            self._set = self.queue.cancel_requested(self.job_id)
        return self._set


class QueueWorker:
    def __init__(self, queue: JobQueue, pipelines, preview_dir=None, progress_type=JobProgress, refine_settings=None):
        """preview_dir: where each running job's live preview files go (None: no previews).
        progress_type(job_id, preview=...): a JobProgress (`queue run` prints a line from it).
        refine_settings: the prompt refinement server (None: from the environment)."""
        self.queue, self.pipelines, self.preview_dir = queue, pipelines, preview_dir
        self.progress_type, self.refine_settings = progress_type, refine_settings
        self.progress: dict[str, JobProgress] = {}
        self.cancels: dict[str, QueueCancel] = {}
        self._wake, self._stop = threading.Event(), threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.queue.recover()
        self._thread = threading.Thread(target=self._loop, name="queue-worker", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        for cancel in list(self.cancels.values()):
            cancel.set()

    def wake(self) -> None:
        self._wake.set()

    def cancel(self, job_id: str) -> Job:
        job = self.queue.cancel(job_id)
        if job_id in self.cancels:
            self.cancels[job_id].set()
        return job

    def _loop(self) -> None:
        while not self._stop.is_set():
            if self.run_one() is None:
                self._wake.wait(1.0)
                self._wake.clear()

    def run_until_empty(self) -> list[Job]:
        finished = []
        while (job := self.run_one()) is not None:
            finished.append(job)
        return finished

    def run_one(self) -> Job | None:
        """Claim the next queued job and run it to its end; None when the queue is empty."""
        from opensora.presets import load_preset

        job = self.queue.claim_next()
        if job is None:
            return None
        previews = None if self.preview_dir is None else PreviewFiles(self.preview_dir)
        progress = self.progress[job.id] = self.progress_type(job.id, preview=previews)
        cancel = self.cancels[job.id] = QueueCancel(self.queue, job.id)
        failure = None
        try:
            preset = load_preset(job.preset)
            settings = GenerationSettings.from_dict(job.settings)
            # Only when set: the runner's stand-ins in tests take the app's arguments.
            refine = {} if self.refine_settings is None else {"refine_settings": self.refine_settings}
            result = self.run(preset, settings, self.pipelines, self.queue.output_dir, progress, cancel,
                              record={"job_id": job.id}, **refine)
            return self.queue.finish(job.id, "done", [p.name for p in result.paths],
                                     seconds_per_step=progress.seconds_per_step, notices=result.notices)
        except Exception as err:  # noqa: BLE001 - a failed job must not stop the queue
            failure = failure_message(err)
        finally:
            self.cancels.pop(job.id, None)
        # Outside the except block: the traceback (holding the model's activations) is gone.
        kind, text = failure
        if kind == "oom":
            from opensora.pipeline_cache import free_memory

            free_memory()
        state = "cancelled" if kind == "cancelled" else "failed"
        return self.queue.finish(job.id, state, error=text, seconds_per_step=progress.seconds_per_step)

    def run(self, *args, **kwargs):
        return runner.run_job(*args, **kwargs)  # looked up per call: tests and ZeroGPU wrap it


def failure_message(err: Exception) -> tuple[str, str]:
    """(kind, text) of a failed job: kind "cancelled", "user", "oom" or "error". A user error is
    one log line; a bug logs its traceback."""
    from opensora.sampling.denoise import GenerationCancelled

    if isinstance(err, GenerationCancelled):
        return "cancelled", str(err)
    if isinstance(err, UserError):
        log.info("generation refused: %s", str(err).splitlines()[0])
        return "user", str(err)
    if isinstance(err, MemoryError) or type(err).__name__ == "OutOfMemoryError":  # torch's, CPU or CUDA
        log.warning("generation ran out of memory")
        return "oom", "Out of memory while generating. Try fewer frames, a lower resolution or fewer samples."
    log.error("generation failed:\n%s", "".join(traceback.format_exception(err)))
    return "error", f"Generation failed ({type(err).__name__}: {err}). The app is still running."
