"""The text the encoders see: `"<prompt>. 24 FPS. 4 motion score."` (text_conditioning_spec.md)."""

from opensora.refine.suffixes import add_fps_suffix, add_motion_suffix


def model_prompt(prompt: str, fps: int, motion_score: int | None) -> str:
    text = add_fps_suffix(prompt, fps)
    return text if motion_score is None else add_motion_suffix(text, motion_score)
