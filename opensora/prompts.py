"""The text the encoders see: `"<prompt>. 24 FPS. 4 motion score."` (text_conditioning_spec.md)."""

from opensora.errors import UserError
from opensora.refine.prepare import parse_motion_setting
from opensora.refine.suffixes import add_fps_suffix, add_motion_suffix


def check_motion_score(value) -> int:
    """An int in 1..15 (digit strings accepted). "dynamic" is resolved earlier, by prepare_prompt."""
    score = parse_motion_setting(value)
    if score == "dynamic":
        raise UserError("motion score 'dynamic' must be resolved with opensora.refine.prepare_prompt first")
    return score


def model_prompt(prompt: str, fps: int, motion_score: int | None) -> str:
    text = add_fps_suffix(prompt, fps)
    return text if motion_score is None else add_motion_suffix(text, motion_score)
