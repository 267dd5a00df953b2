"""What the Generate and Cancel buttons of both video tabs do: a request from the form ->
`opensora.runner.run_job`, with progress and cancel wired to Gradio.

Errors become a `gr.Error` message in the page (and an error for API clients) and one line in
the log; the app keeps serving. A cancelled run is not an error: the status line says where it
stopped.
"""

from __future__ import annotations

import logging
import traceback

import gradio as gr

from app.cancel import CancelRegistry
from app.config import AppConfig
from app.presets_info import check_selectable
from app.progress import StepProgress
from app.zerogpu import estimate_gpu_seconds, gpu_task
from opensora.errors import UserError
from opensora.generation_settings import GenerationRequest, resolve_settings
from opensora.pipeline_cache import PipelineCache, free_memory
from opensora import runner

log = logging.getLogger(__name__)


def _gpu_duration(preset, settings, *_):
    return estimate_gpu_seconds(preset, settings)


@gpu_task(duration=_gpu_duration)
def _generate_on_gpu(preset, settings, cache, output_dir, progress, cancel_event):
    # The one GPU-bound call: ZeroGPU attaches a GPU around exactly this.
    return runner.run_job(preset, settings, cache, output_dir, progress, cancel_event)


def _session(request: gr.Request | None) -> str:
    return (request.session_hash if request is not None else None) or "no-session"


class GenerateHandler:
    def __init__(self, config: AppConfig, cache: PipelineCache, cancels: CancelRegistry):
        self.config, self.cache, self.cancels = config, cache, cancels

    def arm(self, request: gr.Request) -> str:
        self.cancels.arm(_session(request))
        return ""  # clears the previous run's cancel note

    def cancel(self, request: gr.Request) -> str:
        flagged = self.cancels.cancel(_session(request))
        return "Cancelling: the run stops after the current step." if flagged else "Nothing to cancel."

    def run(self, request: GenerationRequest, session: gr.Request | None, progress: gr.Progress):
        """-> (first video path, all video paths, status markdown, seed used)."""
        return self.run_with_image(request, session, progress)[:4]

    def run_with_image(self, request: GenerationRequest, session: gr.Request | None, progress: gr.Progress):
        """`run`'s four values, then the first video's text -> image -> video first frame (a PNG path)
        or None."""
        session_id = _session(session)
        event = self.cancels.start(session_id)

        def report(fraction, desc):
            progress(fraction if fraction is not None else 0.0, desc=desc, unit="steps")

        steps = StepProgress(report)
        error = None
        try:
            preset = check_selectable(request.preset, self.config.ckpt_dir)
            settings = resolve_settings(request, preset)
            out = _generate_on_gpu(preset, settings, self.cache, self.config.output_dir, steps, event)
        except Exception as err:  # noqa: BLE001 - every failure must become a message, never a dead app
            error = _message(err)
        finally:
            self.cancels.finish(session_id, event)
        if error is not None:
            # Handled outside the except block: the original traceback (whose frames hold the
            # pipeline and its activations) is gone here, so memory can really be freed.
            kind, text = error
            if kind == "cancelled":
                return None, [], text, gr.update(), None
            if kind == "oom":
                free_memory()
            raise gr.Error(text, duration=None, print_exception=False)
        paths = [str(p) for p in out.paths]
        seeds = ", ".join(str(s) for s in out.seeds)
        status = (f"**Done:** {len(paths)} video{'s' if len(paths) > 1 else ''} in {out.seconds:.1f} s · "
                  f"seed{'s' if len(paths) > 1 else ''} {seeds} · " + ", ".join(f"`{p.name}`" for p in out.paths))
        status += "".join(f"\n\nNote: {notice}" for notice in out.notices)
        image = out.images[0] if out.images and out.images[0] is not None else None
        return paths[0], paths, status, out.seeds[0], None if image is None else str(image)


def _message(err: Exception) -> tuple[str, str]:
    """(kind, text): kind is "cancelled", "oom" or "error". User errors are one log line."""
    from opensora.sampling.denoise import GenerationCancelled

    if isinstance(err, GenerationCancelled):
        return "cancelled", f"**Cancelled** ({err}); nothing was written."
    if isinstance(err, UserError):
        log.info("generation refused: %s", str(err).splitlines()[0])
        return "error", str(err)
    if isinstance(err, MemoryError) or type(err).__name__ == "OutOfMemoryError":  # torch's, CPU or CUDA
        log.warning("generation ran out of memory")
        return "oom", "Out of memory while generating. Try fewer frames, a lower resolution or fewer samples."
    log.error("generation failed:\n%s", "".join(traceback.format_exception(err)))
    return "error", f"Generation failed ({type(err).__name__}: {err}). The app is still running."
