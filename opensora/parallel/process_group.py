"""The torch.distributed process group of a torchrun launch, and what ranks send each other.

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT for every process; a plain
`python` start has none of them and runs as the only rank.
"""

import json
import os
import sys
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from opensora.errors import UserError


@dataclass(frozen=True)
class ParallelState:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 runs the UI or CLI, writes the files; the others follow."""
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return "TORCHELASTIC_RUN_ID" in os.environ or ("RANK" in os.environ and "WORLD_SIZE" in os.environ)


def init_from_env() -> ParallelState:
    """Join the process group torchrun describes (NCCL with one GPU per rank, else gloo).

    Without torchrun's variables (or with WORLD_SIZE 1) nothing is initialised and the state is rank 0 of 1.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return ParallelState()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        if local_rank >= torch.cuda.device_count():
            raise UserError(
                f"LOCAL_RANK {local_rank} has no GPU: this machine has {torch.cuda.device_count()}; "
                "start torchrun with --nproc_per_node at most that"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend, rank=rank, world_size=world)
    return ParallelState(rank=rank, world_size=world, local_rank=local_rank, device=device)


def destroy() -> None:
    """Leave the group cleanly (every rank must call it)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def broadcast_json(payload=None, src: int = 0):
    """Send a JSON-able value (a job's settings) from `src` to every rank; returns it on all of them.

    JSON rather than torch's pickled objects: ranks never unpickle what another process sent.
    """
    if world_size() == 1:
        return payload
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    data = json.dumps(payload).encode() if rank() == src else b""
    size = torch.tensor([len(data)], dtype=torch.long, device=device)
    dist.broadcast(size, src)
    buffer = torch.zeros(int(size.item()), dtype=torch.uint8, device=device)
    if rank() == src:
        buffer.copy_(torch.frombuffer(bytearray(data), dtype=torch.uint8))
    dist.broadcast(buffer, src)
    return json.loads(buffer.cpu().numpy().tobytes().decode())


def broadcast_tensor(tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Every rank gets `src`'s tensor (shape and dtype must already agree, e.g. the text embeddings)."""
    if world_size() > 1:
        tensor = tensor.contiguous()
        dist.broadcast(tensor, src)
    return tensor


def torchrun_argv(nproc_per_node: int, script_argv: list[str]) -> list[str]:
    """The command that re-runs `script_argv` (a script path or `-m module` and its arguments) under
    torchrun with one process per GPU on this machine."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc_per_node}", *script_argv]


def should_relaunch(no_parallel: bool) -> int:
    """How many processes to re-launch with (0: run here): more than one GPU, not already under
    torchrun, not switched off with --no-parallel."""
    if no_parallel or launched_by_torchrun() or not torch.cuda.is_available():
        return 0
    count = torch.cuda.device_count()
    return count if count > 1 else 0
