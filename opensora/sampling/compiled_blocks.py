"""`--compile`: torch.compile of the MMDiT's repeated blocks (diffusers' `compile_repeated_blocks`,
"regional compilation": one compiled block body serves all blocks of its kind).

The blocks are compiled once per loaded pipeline; later generations of the same shapes reuse the
compiled code, so only the first one pays the compile time. Switching compile off keeps the
compiled blocks aside, so switching it on again does not compile again.

`compile_unavailable_reason` is torch-free, so a machine that cannot compile fails before the load.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from contextlib import contextmanager


def compile_unavailable_reason(device: str) -> str | None:
    """Why torch.compile (inductor) cannot run on `device` here, or None when it can."""
    if device.startswith("cuda"):
        return None if importlib.util.find_spec("triton") else "triton is not installed (it comes with the CUDA torch)"
    if device.startswith("cpu"):
        compiler = os.environ.get("CXX") or "g++"  # what inductor's C++ backend calls
        return None if shutil.which(compiler) else f"inductor needs a C++ compiler and {compiler} is not on PATH " \
                                                     "(apt-get install g++, or set CXX)"
    return f"torch.compile is offered on cpu and cuda only (device here: {device})"


def compiled_graphs() -> int:
    """Graphs dynamo has compiled in this process (a recompile adds one)."""
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


def compile_seconds() -> float:
    """Seconds dynamo has spent compiling in this process so far."""
    from torch._dynamo.utils import compilation_time_metrics

    return sum(compilation_time_metrics.get("_compile.compile_inner", []))


@contextmanager
def report_compiles(notice, on_message=None):
    """Tell `notice` (and `on_message`) how long compiling took when the code inside compiled something
    (the first generation of a size); silent when everything was reused, or `notice` is None."""
    if notice is None:
        yield
        return
    graphs, seconds = compiled_graphs(), compile_seconds()
    yield
    if compiled_graphs() > graphs:
        text = (f"compiled the MMDiT blocks in {compile_seconds() - seconds:.1f} s; later generations of this "
                "size reuse them")
        notice(text)
        if on_message is not None:
            on_message(text)


class CompiledBlocks:
    """The compiled state of one transformer's repeated blocks."""

    def __init__(self, transformer, backend: str = "inductor"):
        self.transformer, self.backend = transformer, backend
        self._compiled: dict = {}  # block -> its compiled __call__ (nn.Module.compile's _compiled_call_impl)
        self.on = False

    def _blocks(self) -> list:
        names = self.transformer._repeated_blocks
        return [m for m in self.transformer.modules() if m.__class__.__name__ in names]

    def set(self, on: bool) -> None:
        """Compile on first use; afterwards only switch between the compiled and the eager call."""
        if on == self.on:
            return
        if on and not self._compiled:
            self.transformer.compile_repeated_blocks(backend=self.backend)
            self._compiled = {block: block._compiled_call_impl for block in self._blocks()}
        for block, compiled in self._compiled.items():
            block._compiled_call_impl = compiled if on else None  # None: nn.Module calls forward eagerly
        self.on = on
