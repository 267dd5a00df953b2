"""What History's "Extend" button does: a finished video continued into a longer one through
`opensora.extend` (v2v_head parts from its last 33 frames), written as one new video.

The parts run on the same cached pipeline as the queue's jobs, one at a time under its lock. Errors
become a message in the page; Cancel stops after the current step.
"""

from __future__ import annotations

import threading
from pathlib import Path

import gradio as gr

from app.config import AppConfig
from app.presets_info import check_selectable
from app.progress import StepProgress
from opensora.errors import UserError
from opensora.extend import extension_request, plan_extension, run_extension
from opensora.io.embedded_settings import settings_from_file
from opensora.pipeline_cache import PipelineCache


def _session(request: gr.Request | None) -> str:
    return (request.session_hash if request is not None else None) or "no-session"


class ExtendHandler:
    def __init__(self, config: AppConfig, cache: PipelineCache):
        self.config, self.cache = config, cache
        self._cancels: dict[str, threading.Event] = {}

    def cancel(self, request: gr.Request) -> str:
        event = self._cancels.get(_session(request))
        if event is None:
            return "Nothing to cancel."
        event.set()
        return "Cancelling: the extension stops after the current step."

    def run(self, index: int | None, prompt: str, seconds: float, request: gr.Request, progress=gr.Progress()) -> str:
        """Extend video `index` of the output folder to `seconds`; -> the status line."""
        from opensora.queue_worker import failure_message

        if index is None:
            raise gr.Error("select a video in History first", print_exception=False)
        source = self.config.output_dir / f"{index:04d}.mp4"
        session, event = _session(request), threading.Event()
        self._cancels[session] = event

        def report(fraction, desc):
            progress(fraction if fraction is not None else 0.0, desc=desc, unit="steps")

        try:
            settings = settings_from_file(source.with_suffix(".json"))
            preset = check_selectable(settings["preset"], self.config.ckpt_dir)
            plan = plan_extension(source, extension_request(settings, prompt.strip() or None),
                                  float(seconds or 0), preset, options=self.cache.options,
                                  ckpt_dir=self.config.ckpt_dir)
            result = run_extension(plan, preset, self.cache, self.config.output_dir, StepProgress(report), event)
        except Exception as err:  # noqa: BLE001 - every failure must become a message, never a dead app
            kind, text = failure_message(err if not isinstance(err, UserError) else UserError(_short(err, source)))
            if kind == "cancelled":
                return f"**Cancelled** ({text}); nothing was written."
            raise gr.Error(text, duration=None, print_exception=False) from None
        finally:
            self._cancels.pop(session, None)
        path, extension = result.paths[0], result.sidecars[0]["extension"]
        status = (f"**Extended:** `{path.name}` · {extension['source_frames']} → {extension['frames']} frames "
                  f"({extension['length_s']:g} s) in {len(extension['parts'])} part(s) · {result.seconds:.1f} s")
        return status + "".join(f"\n\nNote: {notice}" for notice in result.notices)


def _short(err: UserError, source: Path) -> str:
    return str(err).replace(str(source.parent) + "/", "")
