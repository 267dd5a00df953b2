"""How rank 0 hands its jobs to the other torchrun ranks, and how they follow.

Rank 0 runs the CLI or the app and is the only rank that prepares prompts, encodes text and
references, decodes and writes. For each job it sends (JSON over torch.distributed, never pickles):

    {"job": {"preset", "options", "profiles", "loras"}}   every rank gets the same pipeline ready
    {"sample": {"cond_type", "num_steps", "guidance", "tensors": [[shape, dtype], ...]}}, then the
        tensors (noise, T5 / CLIP states, reference latents: encoded once, on rank 0); every rank
        runs the denoise loop with the image tokens split over the ranks
    {"end": true}                                          the job is over (done, failed or cancelled)
    {"stop": true}                                         the followers leave; then every rank calls destroy()

Between steps every rank asks `SharedCancel.is_set()`, which broadcasts rank 0's cancel flag, so a
cancelled job stops on all ranks at the same step.
"""

from __future__ import annotations

from dataclasses import asdict, replace

import torch
import torch.distributed as dist

from opensora.parallel.process_group import broadcast_json, broadcast_tensor, rank, world_size


def _is_main_of_several() -> bool:
    return world_size() > 1 and rank() == 0


def _comm_device() -> torch.device:
    """Where collectives' tensors must live: the rank's GPU under NCCL, the CPU under gloo."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def announce_job(preset, options, profiles: list[str] | None, loras) -> None:
    """Rank 0: the pipeline every rank needs for the next job (a no-op in a single process)."""
    if _is_main_of_several():
        broadcast_json({"job": {"preset": str(preset.path), "options": asdict(options), "profiles": profiles,
                                "loras": [[str(c.path), float(c.scale)] for c in loras]}})


def end_job() -> None:
    """Rank 0: the job is over, whatever happened to it (sent from a `finally`)."""
    if _is_main_of_several():
        broadcast_json({"end": True})


def stop_followers() -> None:
    """Rank 0: the other ranks leave `follow_jobs` (before every rank calls `destroy()`)."""
    if _is_main_of_several():
        broadcast_json({"stop": True})


def send_sample(meta: dict, tensors: list[torch.Tensor], device) -> None:
    """Rank 0: one sample's denoise inputs to the other ranks (see `OpenSoraPipeline.follow_sample`)."""
    shapes = [[list(t.shape), str(t.dtype).removeprefix("torch.")] for t in tensors]
    broadcast_json({"sample": {**meta, "tensors": shapes}})
    for tensor in tensors:
        broadcast_tensor(tensor.to(device))


def _receive_tensors(header: dict, device) -> list[torch.Tensor]:
    tensors = [torch.empty(shape, dtype=getattr(torch, dtype), device=device) for shape, dtype in header["tensors"]]
    return [broadcast_tensor(t) for t in tensors]


class SharedCancel:
    """Rank 0's cancel event seen by every rank: each `is_set()` is one broadcast, made by all ranks
    at the same point of the denoise loop."""

    def __init__(self, event=None):
        self.event = event  # rank 0's (anything with is_set()); None on the other ranks

    def is_set(self) -> bool:
        if world_size() == 1:
            return self.event is not None and self.event.is_set()
        wanted = rank() == 0 and self.event is not None and self.event.is_set()
        flag = torch.tensor([int(wanted)], dtype=torch.uint8, device=_comm_device())
        dist.broadcast(flag, 0)
        return bool(flag.item())


def follow_jobs(pipelines) -> None:
    """Every rank but 0: get each announced job's pipeline ready in `pipelines` (a PipelineCache with
    this rank's device) and take part in its samples, until rank 0 says stop."""
    from opensora.generation_settings import LoraChoice
    from opensora.pipeline_cache import RuntimeOptions
    from opensora.presets import load_preset
    from opensora.sampling.denoise import GenerationCancelled

    own_device = pipelines.device
    while True:
        message = broadcast_json(None)
        if "stop" in message:
            return
        if "job" not in message:
            continue
        job = message["job"]
        loras = [LoraChoice(path, scale) for path, scale in job["loras"]]
        pipelines.options = replace(RuntimeOptions(**job["options"]), device=own_device)
        with pipelines.lock:
            pipe = pipelines.get(load_preset(job["preset"]), profiles=job["profiles"], loras=loras)
            pipelines.apply_loras(pipe, loras)
            while "sample" in (message := broadcast_json(None)):
                tensors = _receive_tensors(message["sample"], pipe.device)
                try:
                    pipe.follow_sample(message["sample"], tensors)
                except GenerationCancelled:
                    pass  # rank 0 ends the job next
            del pipe
        if "stop" in message:
            return
