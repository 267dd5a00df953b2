"""The FPS and motion-score sentences Open-Sora 2.0 appends to every video prompt.

Inference uses two sentences, "<text>. 24 FPS. 4 motion score." (text_conditioning_spec.md §2);
the pipeline reuses these helpers so the CLI, UI and batch mode build identical strings.
"""

from __future__ import annotations

import re

_FPS_SUFFIX = re.compile(r"\d+ FPS\.$")
_MOTION_SUFFIX = re.compile(r"\d+ motion score\.$")


def add_fps_suffix(text: str, fps: int) -> str:
    """Official rule: strip, end with ".", then append " {fps} FPS." unless already there."""
    text = text.strip()
    if not text.endswith("."):
        text += "."
    if not _FPS_SUFFIX.search(text):
        text += f" {fps} FPS."
    return text


def add_motion_suffix(text: str, score: int) -> str:
    """Append " {score} motion score." (official form after the FPS sentence).

    Called on the output of add_fps_suffix this is exactly the official string; on other text
    it also makes sure the previous sentence ends with "." and never doubles the suffix.
    """
    text = text.strip()
    if not text.endswith("."):
        text += "."
    if _MOTION_SUFFIX.search(text):
        return text
    return f"{text} {score} motion score."
