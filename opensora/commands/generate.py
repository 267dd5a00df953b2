"""`python -m opensora generate`: prompts (or a CSV of them) -> OUTPUT_DIR/NNNN.mp4 + NNNN.json + results.csv.

Flags follow the official inference script; both `--num-frames` and `--num_frames` spellings work.
Every job is resolved and checked before the model loads (the memory planner included); then each
goes through `opensora.runner`.

With more than one GPU it runs itself again under torchrun, one process per GPU (`--no-parallel`:
not): rank 0 reads the jobs and writes the videos, the other ranks follow (opensora.parallel.jobs).
"""

from __future__ import annotations

import argparse
import subprocess
import sys

from opensora.errors import UserError
from opensora.generation_arguments import add_arguments, check_threads, requests_from_args, runtime_options
from opensora.refine.arguments import settings_from_args

__all__ = ["add_arguments", "run"]  # the flags live in opensora.generation_arguments (`queue add` shares them)


class BarProgress:
    """The runner's progress on stderr: messages as lines, steps as a tqdm bar."""

    def __init__(self, label: str, preview=None):
        self.label, self.bar = label, None
        self.preview = preview  # the runner's preview hook (--preview), or None for none

    def message(self, text: str) -> None:
        if self.bar is None:
            print(f"{text}", file=sys.stderr)
        else:  # e.g. the FLUX first frame being drawn before the video's steps
            self.bar.set_postfix_str(text)

    def begin(self, num_samples: int) -> None:
        from tqdm import tqdm

        self.bar = tqdm(desc=self.label, unit="step", file=sys.stderr)

    def __call__(self, step: int, total: int, _latent=None) -> None:
        if step == 0:
            self.bar.reset(total=total)
            self.bar.set_postfix_str("")  # the video's steps: earlier messages are done
        self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()  # ends the bar's line: a following error starts on its own
            self.bar = None


def run(args: argparse.Namespace) -> int:
    from opensora.devices import check_device
    from opensora.parallel.process_group import launched_by_torchrun, should_relaunch, torchrun_argv
    from opensora.pipeline_cache import PipelineCache

    check_threads(args.threads)
    device, dtype = check_device(args.device, args.dtype)
    options = runtime_options(args, device, dtype)
    if launched_by_torchrun():
        return run_as_rank(args, options)
    preset, jobs = checked_jobs(args, options)  # bad input fails here, before any process starts
    nproc = should_relaunch(args.no_parallel)
    if nproc:
        print(f"{nproc} GPUs: running under torchrun, one process per GPU (--no-parallel: one process)",
              file=sys.stderr)
        return subprocess.call(torchrun_argv(nproc, ["-m", "opensora", *sys.argv[1:]]))
    return run_jobs(args, preset, jobs, PipelineCache(args.ckpt_dir, options=options))


def run_as_rank(args: argparse.Namespace, options) -> int:
    """Under torchrun: rank 0 runs the jobs, the others follow; every rank leaves the group at the end."""
    from dataclasses import replace

    from opensora.parallel.jobs import follow_jobs, stop_followers
    from opensora.parallel.process_group import destroy, init_from_env
    from opensora.pipeline_cache import PipelineCache

    state = init_from_env()
    pipelines = PipelineCache(args.ckpt_dir, options=replace(options, device=str(state.device)))  # the rank's GPU
    try:
        if not state.is_main:
            follow_jobs(pipelines)
            return 0
        try:
            preset, jobs = checked_jobs(args, pipelines.options)
            return run_jobs(args, preset, jobs, pipelines)
        finally:
            stop_followers()
    finally:
        pipelines.unload()
        destroy()


def checked_jobs(args: argparse.Namespace, options):
    """(preset, [GenerationSettings]): every job resolved and checked, the memory planner included."""
    from opensora.checkpoints import default_preset_name
    from opensora.generation_settings import resolve_settings
    from opensora.io.outputs import OutputWriter
    from opensora.presets import load_preset
    from opensora.runner import check_job_fits

    preset = load_preset(args.preset or default_preset_name(args.ckpt_dir))
    jobs = []
    for where, request in requests_from_args(args):
        try:
            settings = resolve_settings(request, preset)
            check_job_fits(settings, preset, options, args.ckpt_dir)
        except UserError as err:
            raise UserError(f"{where}{err}") from None
        jobs.append(settings)
    OutputWriter(args.output_dir).check_writable()
    return preset, jobs


def run_jobs(args: argparse.Namespace, preset, jobs: list, pipelines) -> int:
    from opensora.preview.files import PreviewFile
    from opensora.runner import run_job

    refine_settings = settings_from_args(args)
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    print(f"preset {preset.name} ({preset.description})", file=sys.stderr)
    try:
        for settings in jobs:
            progress = BarProgress(settings.prompt[:40], None if args.preview is None else PreviewFile(args.preview))
            try:
                result = run_job(preset, settings, pipelines, args.output_dir, progress,
                                 refine_settings=refine_settings)
            finally:
                progress.close()
            for notice in result.notices:
                print(f"notice: {notice}", file=sys.stderr)
            for path in result.paths:
                print(path)
    finally:
        pipelines.unload()  # e.g. the disk profile's block files
    return 0
