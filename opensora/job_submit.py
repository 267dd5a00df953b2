"""Adding jobs to the persistent queue the same way from the app and from `python -m opensora queue add`.

Every request is resolved (its seed fixed) and checked first, the memory planner included, so a
bad one is refused before anything is added and before any model loads; then each job's references
are copied into the output folder (uploads and the CSV's files may be gone when it runs) and the
jobs are added in order.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

from opensora.errors import UserError
from opensora.generation_settings import GenerationRequest, GenerationSettings, resolve_settings
from opensora.job_queue import Job, JobQueue
from opensora.presets import Preset


@dataclass
class ResolvedJob:
    preset: str  # as the request named it (a name, or a TOML file): the worker loads it again
    settings: GenerationSettings


def resolve_jobs(requests: list[tuple[str, GenerationRequest]], load: Callable[[str], Preset], options,
                 ckpt_dir) -> list[ResolvedJob]:
    """requests: (where, request) pairs, `where` prefixing the request's error ("jobs.csv line 3: ").
    load: a preset name -> Preset (the app's also says which files are missing). options: the
    RuntimeOptions the memory planner checks the job against (None: no check, as on ZeroGPU)."""
    from opensora.runner import check_job_fits

    jobs = []
    for where, request in requests:
        try:
            preset = load(request.preset)
            settings = resolve_settings(request, preset)
            if options is not None:
                check_job_fits(settings, preset, options, ckpt_dir)
        except UserError as err:
            raise UserError(f"{where}{err}") from None
        jobs.append(ResolvedJob(request.preset, settings))
    return jobs


def enqueue(queue: JobQueue, jobs: list[ResolvedJob]) -> list[Job]:
    """Add resolved jobs (references kept in the queue's output folder), in order."""
    from opensora.io.outputs import OutputWriter, copy_reference

    OutputWriter(queue.output_dir).check_writable()  # a read-only folder: one clear line
    added = []
    for job in jobs:
        settings = replace(job.settings, reference=[copy_reference(r, queue.output_dir) for r in job.settings.reference])
        added.append(queue.add(job.preset, settings.to_dict()))
    return added
