"""The persistent job queue: one JSON file per job in OUTPUT_DIR/queue/, shared by the app and the CLI.

A job holds the resolved settings of one generation (seed fixed, references already copied into
the output folder), so it makes the same videos whenever and wherever it runs. States:

    queued -> running -> done | failed | cancelled        (queued -> cancelled, too)

Every change happens under one lock file (`queue/.lock`) and each job file is written atomically,
so any number of processes may add, cancel, reorder and run jobs. A running job records its
runner's pid: when that process dies (kill -9, a crash, a restart of the app), `recover()` puts
the job back in the queue and deletes the videos it had written, so it runs again exactly once.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from opensora.errors import UserError
from opensora.io.atomic import atomic_write_text, file_lock, pid_alive

QUEUE_DIR = "queue"
STATES = ("queued", "running", "done", "failed", "cancelled")
FINISHED = ("done", "failed", "cancelled")


@dataclass
class Job:
    id: str
    order: float  # position among queued jobs: lower runs first
    state: str
    preset: str  # preset name or TOML path, as the request named it
    settings: dict  # GenerationSettings.to_dict()
    summary: str
    created: float
    started: float | None = None
    finished: float | None = None
    pid: int | None = None  # the process running it
    cancel_requested: bool = False
    outputs: list[str] = field(default_factory=list)  # video file names in the output folder
    error: str | None = None
    notices: list[str] = field(default_factory=list)  # what the run told the user
    runs: int = 0  # times it was started (an interrupted job starts again)
    seconds_per_step: float | None = None  # measured when it ran

    @property
    def total_steps(self) -> int:
        return int(self.settings.get("num_steps", 0)) * int(self.settings.get("num_samples", 1))


def summary_of(settings: dict) -> str:
    prompt = " ".join(str(settings.get("prompt", "")).split())
    prompt = prompt if len(prompt) <= 48 else prompt[:47] + "…"
    return (f"{prompt} · {settings.get('cond_type')} · {settings.get('num_frames')} frames "
            f"{settings.get('width')}x{settings.get('height')} · {settings.get('num_steps')} steps · "
            f"seed {settings.get('seed')}" + (f" · {settings['num_samples']} samples"
                                            if settings.get("num_samples", 1) > 1 else ""))


class JobQueue:
    def __init__(self, output_dir: Path | str):
        self.output_dir = Path(output_dir).absolute()
        self.folder = self.output_dir / QUEUE_DIR

    # ------------------------------------------------------------------ files
    def _path(self, job_id: str) -> Path:
        if not job_id or "/" in job_id or job_id.startswith("."):
            raise UserError(f"job id {job_id!r} is not a job of this queue")
        return self.folder / f"{job_id}.json"

    def _lock(self):
        self.folder.mkdir(parents=True, exist_ok=True)
        return file_lock(self.folder / ".lock")

    def _write(self, job: Job) -> None:
        atomic_write_text(self._path(job.id), json.dumps(asdict(job), indent=1) + "\n")

    def _read(self, path: Path) -> Job | None:
        try:
            return Job(**json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            return None  # being replaced, or not ours: skip it

    def get(self, job_id: str) -> Job:
        job = self._read(self._path(job_id))
        if job is None:
            raise UserError(f"job {job_id} is not in the queue (removed?)")
        return job

    def jobs(self) -> list[Job]:
        """Every job: running first, then queued in order, then finished ones newest first."""
        if not self.folder.is_dir():
            return []
        found = [job for path in self.folder.glob("*.json") if (job := self._read(path)) is not None]
        rank = {"running": 0, "queued": 1}
        return sorted(found, key=lambda j: (rank.get(j.state, 2), j.order if j.state in rank else -(j.finished or 0)))

    # ------------------------------------------------------------------ changes
    def add(self, preset: str, settings: dict) -> Job:
        with self._lock():
            queued = [j.order for j in self.jobs()]
            job = Job(id=time.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3), order=max(queued, default=0) + 1,
                      state="queued", preset=preset, settings=settings, summary=summary_of(settings),
                      created=time.time())
            self._write(job)
        return job

    def cancel(self, job_id: str) -> Job:
        """A queued job is cancelled at once; a running one stops after its current step."""
        with self._lock():
            job = self.get(job_id)
            if job.state == "queued":
                job.state, job.finished = "cancelled", time.time()
            elif job.state == "running":
                job.cancel_requested = True
            self._write(job)
        return job

    def move_up(self, job_id: str) -> None:
        with self._lock():
            queued = [j for j in self.jobs() if j.state == "queued"]
            index = next((i for i, j in enumerate(queued) if j.id == job_id), None)
            if index is None:
                raise UserError(f"job {job_id} is not waiting in the queue")
            if index == 0:
                return
            this, before = queued[index], queued[index - 1]
            this.order, before.order = before.order, this.order
            self._write(this)
            self._write(before)

    def remove(self, job_id: str) -> None:
        with self._lock():
            job = self.get(job_id)
            if job.state == "running":
                raise UserError(f"job {job_id} is running: cancel it first")
            self._path(job_id).unlink(missing_ok=True)

    def claim_next(self, pid: int | None = None) -> Job | None:
        """The first queued job, now marked running by `pid` (this process by default)."""
        with self._lock():
            queued = [j for j in self.jobs() if j.state == "queued"]
            if not queued:
                return None
            job = queued[0]
            job.state, job.pid, job.started, job.runs = "running", pid or os.getpid(), time.time(), job.runs + 1
            job.cancel_requested = False
            self._write(job)
        return job

    def finish(self, job_id: str, state: str, outputs: list[str] = (), error: str | None = None,
               seconds_per_step: float | None = None, notices: list[str] = ()) -> Job:
        if state not in FINISHED:
            raise ValueError(f"finish state must be one of {FINISHED}, got {state!r}")
        with self._lock():
            job = self.get(job_id)
            job.state, job.finished, job.pid = state, time.time(), None
            job.outputs, job.error, job.notices = list(outputs), error, list(notices)
            job.seconds_per_step = seconds_per_step or job.seconds_per_step
            self._write(job)
        return job

    def cancel_requested(self, job_id: str) -> bool:
        job = self._read(self._path(job_id))
        return job is None or job.cancel_requested

    def recover(self) -> list[Job]:
        """Put jobs whose runner died back in the queue, their partial videos deleted. Returns them."""
        from opensora.io.outputs import delete_job_outputs

        requeued = []
        with self._lock():
            for job in self.jobs():
                if job.state != "running" or (job.pid is not None and job.pid != os.getpid() and pid_alive(job.pid)):
                    continue
                delete_job_outputs(self.output_dir, job.id)
                job.state, job.pid, job.started, job.cancel_requested = "queued", None, None, False
                self._write(job)
                requeued.append(job)
        return requeued

    # ------------------------------------------------------------------ reading
    def position(self, job_id: str) -> int | None:
        """1 for the next job to run; None when it is not waiting."""
        queued = [j.id for j in self.jobs() if j.state == "queued"]
        return queued.index(job_id) + 1 if job_id in queued else None

    def etas(self, running_done_steps: dict[str, int] | None = None) -> dict[str, float | None]:
        """Seconds until each running or queued job ends, from the step times measured so far."""
        jobs = self.jobs()
        measured = [j.seconds_per_step for j in jobs if j.seconds_per_step]
        per_step = sorted(measured)[len(measured) // 2] if measured else None
        if per_step is None:
            return {j.id: None for j in jobs if j.state in ("running", "queued")}
        done = running_done_steps or {}
        etas, clock = {}, 0.0
        for job in jobs:
            if job.state not in ("running", "queued"):
                continue
            clock += max(0, job.total_steps - done.get(job.id, 0)) * (job.seconds_per_step or per_step)
            etas[job.id] = clock
        return etas
