"""Prompt refinement and motion score, against any OpenAI-compatible server or offline.

Integration API (used by `generate`, the UI and batch mode):

    from opensora.refine import RefineSettings, prepare_prompt

    settings = RefineSettings.from_env(base_url=..., model=..., timeout_s=...)  # or None
    prepared = prepare_prompt(
        prompt, refine=True, motion_score="dynamic",      # or an int 1-15
        mode="t2v", ref_image=None, settings=settings, shapes_world=False, fps=24,
    )
    prepared.model_text   # text for T5 + CLIP: "<text>. 24 FPS. 7 motion score."
    prepared.text         # refined-or-original without suffixes (FLUX first-frame prompt)
    prepared.notices      # show each to the user (stderr / UI); generation goes on
    prepared.to_sidecar() # JSON-ready, holds no key

Modules: settings (endpoint config), instructions (system prompts, few-shots, messages),
server (one chat call, retry, error mapping), motion (score request and strict parser),
offline (deterministic local refiner), shapes_world (demo vocabulary), suffixes (FPS / motion
sentences), prepare (prepare_prompt).
"""

from opensora.refine.motion import DEFAULT_MOTION_SCORE, parse_motion_score
from opensora.refine.offline import offline_refine
from opensora.refine.prepare import PreparedPrompt, parse_motion_setting, prepare_prompt
from opensora.refine.settings import RefineSettings
from opensora.refine.shapes_world import normalize_to_shapes_world, shapes_world_caption
from opensora.refine.suffixes import add_fps_suffix, add_motion_suffix

__all__ = [
    "DEFAULT_MOTION_SCORE",
    "PreparedPrompt",
    "RefineSettings",
    "add_fps_suffix",
    "add_motion_suffix",
    "normalize_to_shapes_world",
    "offline_refine",
    "parse_motion_score",
    "parse_motion_setting",
    "prepare_prompt",
    "shapes_world_caption",
]
