"""The official prompt suffixes: `"<prompt>. 24 FPS. 4 motion score."` (text_conditioning_spec.md)."""

import re

from opensora.errors import UserError

FPS_SUFFIX = re.compile(r"\d+ FPS\.$")
MOTION_RANGE = (1, 15)


def add_fps_suffix(text: str, fps: int) -> str:
    text = text.strip()
    if not text.endswith("."):
        text += "."
    if FPS_SUFFIX.search(text):
        return text
    return f"{text} {fps} FPS."


def add_motion_suffix(text: str, motion_score: int) -> str:
    return f"{text} {motion_score} motion score."


def check_motion_score(value) -> int:
    """An int in 1..15 (strings of digits accepted)."""
    try:
        score = int(str(value).strip())
    except ValueError:
        score = None
    if score is None or not MOTION_RANGE[0] <= score <= MOTION_RANGE[1]:
        raise UserError(f"motion score {value!r} is out of range: use an integer 1-15 or 'dynamic'")
    return score


def model_prompt(prompt: str, fps: int, motion_score: int | None) -> str:
    """The text the encoders see for a (possibly refined) prompt."""
    text = add_fps_suffix(prompt, fps)
    return text if motion_score is None else add_motion_suffix(text, motion_score)
