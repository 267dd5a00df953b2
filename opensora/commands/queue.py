"""`python -m opensora queue add|run|list`: the app's persistent job queue (OUTPUT_DIR/queue/) from a shell.

    queue add   one job per --prompt or CSV row, with generate's flags: resolved (seed fixed) and
                checked now, references copied into the output folder; prints id and position
    queue run   runs queued jobs one at a time until the queue is empty (--once: only the next one,
                --watch: keep waiting for new jobs); Ctrl-C puts the running job back in the queue
    queue list  id, state, position, preset and prompt of every job

Jobs added here and in the app are the same files: either side runs them (one at a time each, never
one job twice) and their videos land in the same results.csv, so the app's History shows them.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from opensora.generation_arguments import (
    add_device_arguments, add_folder_arguments, add_job_arguments, add_lora_argument, add_memory_arguments,
    check_threads, requests_from_args, runtime_options,
)
from opensora.job_queue import Job, JobQueue
from opensora.queue_worker import JobProgress
from opensora.refine.arguments import add_refine_prompt_argument, add_refine_server_arguments, settings_from_args

WATCH_POLL_S = 1.0
PROMPT_CHARS = 40  # of `queue list`'s prompt column


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="queue_command", required=True, metavar="{add,run,list}")
    add = actions.add_parser("add", help="add one job per --prompt or CSV row (generate's flags; a CSV "
                             "`preset` column picks a row's model)", description="Add jobs to the queue of "
                             "--output-dir: resolved and checked now, run later by `queue run` or the app.")
    add_job_arguments(add)
    add_lora_argument(add)
    add_refine_prompt_argument(add)
    add_folder_arguments(add)

    run = actions.add_parser("run", help="run queued jobs until the queue is empty", description="Run the "
                             "queued jobs of --output-dir one at a time, headless. Exit code 1 when a job failed; "
                             "Ctrl-C puts the running job back in the queue (its partial videos deleted).")
    add_folder_arguments(run)
    mode = run.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="run only the next queued job")
    mode.add_argument("--watch", action="store_true", help="when the queue is empty, keep waiting for new jobs "
                      "(until Ctrl-C)")
    add_device_arguments(run)
    add_memory_arguments(run, parallel=False)  # one process: the app's worker and this one share the queue
    add_refine_server_arguments(run)

    listing = actions.add_parser("list", help="print every job: id, state, position, preset, prompt",
                                 description="Every job of the queue of --output-dir, the next to run first.")
    add_folder_arguments(listing, ckpt=False)


def run(args: argparse.Namespace) -> int:
    return {"add": add_jobs, "run": run_queue, "list": list_jobs}[args.queue_command](args)


# ---------------------------------------------------------------------------------------------- add
def add_jobs(args: argparse.Namespace) -> int:
    from opensora.checkpoints import default_preset_name
    from opensora.devices import check_device
    from opensora.job_submit import enqueue, resolve_jobs
    from opensora.pipeline_cache import RuntimeOptions
    from opensora.presets import load_preset

    args.preset = args.preset or default_preset_name(args.ckpt_dir)
    requests = [(where, portable(request)) for where, request in requests_from_args(args, preset_column=True)]
    # Checked as the app checks a job: against this machine with the default memory choice (`queue run` may
    # pick others; it checks each job again before it runs).
    device, dtype = check_device(None, None)
    jobs = resolve_jobs(requests, load_preset, RuntimeOptions(device=device, dtype=dtype), args.ckpt_dir)
    queue = JobQueue(args.output_dir)
    for job in enqueue(queue, jobs):
        print(f"{job.id}  position {queue.position(job.id)}  {job.summary}")
    return 0


def portable(request):
    """Files named relative to this shell's folder, made absolute: `queue run` may start elsewhere."""
    from dataclasses import replace

    from opensora.generation_settings import LoraChoice

    preset = request.preset
    if preset and preset.endswith(".toml"):
        preset = str(Path(preset).absolute())
    loras = [LoraChoice(str(Path(lora.path).absolute()), lora.scale) for lora in request.loras]
    return replace(request, preset=preset, loras=loras)


# ---------------------------------------------------------------------------------------------- run
@dataclass
class LineProgress(JobProgress):
    """A running job's progress as one line on stderr: rewritten in place on a terminal, else
    printed once when the job starts (logs get no carriage-return noise)."""

    label: str = ""
    stream: object = None  # None: sys.stderr as it is when the job starts

    def __post_init__(self):
        self.stream = self.stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        if not self.tty:
            print(f"{self.job_id} running: {self.label}", file=self.stream, flush=True)

    def message(self, text: str) -> None:
        super().message(text)
        self._show(text)

    def __call__(self, step: int, total: int, latent=None) -> None:
        super().__call__(step, total, latent)
        eta = self.eta_s
        sample = f"sample {self.sample + 1}/{self.num_samples} · " if self.num_samples > 1 else ""
        self._show(f"{sample}step {self.sample_step}/{self.steps_per_sample}"
                   + (f" · ETA {eta:.0f} s" if eta is not None else ""))

    def _show(self, text: str) -> None:
        if self.tty:
            print(f"\r\x1b[K{self.job_id} {text}", end="", file=self.stream, flush=True)

    def close(self) -> None:
        if self.tty:
            print(file=self.stream)  # the next line starts on its own


def run_queue(args: argparse.Namespace) -> int:
    from opensora.devices import check_device
    from opensora.pipeline_cache import PipelineCache
    from opensora.queue_worker import QueueWorker

    check_threads(args.threads)
    device, dtype = check_device(args.device, args.dtype)
    pipelines = PipelineCache(args.ckpt_dir, options=runtime_options(args, device, dtype))
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    queue = JobQueue(args.output_dir)
    worker = QueueWorker(queue, pipelines, refine_settings=settings_from_args(args),
                         progress_type=lambda job_id, preview=None: LineProgress(
                             job_id, preview=preview, label=queue.get(job_id).summary))
    previous = signal.signal(signal.SIGTERM, _interrupt)  # `kill` as Ctrl-C: the job goes back in the queue
    finished: list[Job] = []
    try:
        for job in queue.recover():  # a runner that died (app or CLI): its job runs again
            print(f"{job.id} was interrupted: back in the queue", file=sys.stderr)
        while True:
            job = worker.run_one()
            if job is not None:
                worker.progress.pop(job.id).close()
                finished.append(job)
                print(result_line(queue, job), flush=True)
                if args.once:
                    break
            elif args.watch:
                time.sleep(WATCH_POLL_S)
            else:
                break
    except KeyboardInterrupt:
        # A second Ctrl-C must not cut the clean-up short.
        interrupt_handler = signal.signal(signal.SIGINT, signal.SIG_IGN)
        for progress in worker.progress.values():
            progress.close()
        back = queue.recover()  # as after an app restart: partial videos deleted, the job queued again
        print(f"interrupted: {', '.join(j.id for j in back) or 'no job was running'}"
              + (" back in the queue" if back else ""), file=sys.stderr)
        signal.signal(signal.SIGINT, interrupt_handler)  # as it was, for a caller in the same process
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
        pipelines.unload()
    states = Counter(job.state for job in finished)
    waiting = sum(job.state == "queued" for job in queue.jobs())
    print(f"{len(finished)} job{'s' if len(finished) != 1 else ''} run"
          + "".join(f", {n} {state}" for state, n in states.items()) + f"; {waiting} waiting in {queue.folder}",
          file=sys.stderr)
    return 1 if states["failed"] else 0


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def result_line(queue: JobQueue, job: Job) -> str:
    seconds = f" in {job.finished - job.started:.1f} s" if job.finished and job.started else ""
    if job.state == "done":
        return f"{job.id} done{seconds}: " + " ".join(str(queue.output_dir / name) for name in job.outputs)
    return f"{job.id} {job.state}{seconds}: {(job.error or '').splitlines()[0] if job.error else ''}"


# ---------------------------------------------------------------------------------------------- list
def list_jobs(args: argparse.Namespace) -> int:
    queue = JobQueue(args.output_dir)
    jobs = queue.jobs()
    if not jobs:
        print(f"no jobs in {queue.folder}", file=sys.stderr)
        return 0
    rows, position = [], 0
    for job in jobs:
        position += job.state == "queued"
        prompt = " ".join(str(job.settings.get("prompt", "")).split())
        rows.append((job.id, job.state, str(position) if job.state == "queued" else "-", Path(job.preset).name,
                     prompt if len(prompt) <= PROMPT_CHARS else prompt[:PROMPT_CHARS - 1] + "…"))
    header = ("ID", "STATE", "POS", "PRESET", "PROMPT")
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header) - 1)]
    for row in (header, *rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1])
    return 0
