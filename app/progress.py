"""Turns the pipeline's step callback into progress updates with a step count and an ETA."""

import time
from typing import Callable

# report((done, total) or None, description) -> e.g. a gr.Progress wrapped by the handler
Report = Callable[[tuple[int, int] | None, str], None]


def format_seconds(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class StepProgress:
    """Call as the pipeline callback: (step_index, total_steps, latent)."""

    def __init__(self, report: Report):
        self._report = report
        self.num_samples = 1
        self._sample = 0
        self._started = time.monotonic()
        self._seen_steps = False
        self.last = ""  # last description, shown in the status line

    def message(self, text: str) -> None:
        self.last = text
        self._report(None, text)

    def begin(self, num_samples: int) -> None:
        self.num_samples, self._sample, self._started = num_samples, 0, time.monotonic()
        self._seen_steps = False

    def __call__(self, step: int, total: int, _latent=None) -> None:
        if step == 0 and self._seen_steps:
            self._sample += 1  # steps restart at 0 for each sample
        self._seen_steps = True
        done = self._sample * total + step + 1
        overall = total * self.num_samples
        elapsed = time.monotonic() - self._started
        eta = elapsed / done * (overall - done)
        sample = f"sample {self._sample + 1}/{self.num_samples} · " if self.num_samples > 1 else ""
        self.last = f"{sample}step {step + 1}/{total} · ETA {format_seconds(eta)}"
        self._report((done, overall), self.last)
