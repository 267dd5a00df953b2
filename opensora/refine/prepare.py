"""prepare_prompt(): the one call that turns a user prompt into the text the encoders see."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from opensora.errors import UserError
from opensora.refine.instructions import MODES, build_messages, image_data_url
from opensora.refine.motion import (
    DEFAULT_MOTION_SCORE,
    MAX_MOTION_SCORE,
    MIN_MOTION_SCORE,
    motion_messages,
    parse_motion_score,
)
from opensora.refine.offline import offline_refine
from opensora.refine.server import RefineFailure, chat
from opensora.refine.settings import RefineSettings, redact
from opensora.refine.shapes_world import normalize_to_shapes_world
from opensora.refine.suffixes import add_fps_suffix, add_motion_suffix

log = logging.getLogger(__name__)

REFINE_MAX_TOKENS = 250  # official values
MOTION_MAX_TOKENS = 100

MotionSource = Literal["fixed", "dynamic", "fallback"]


@dataclass
class PreparedPrompt:
    """Everything generate / the UI need about one prompt, and what goes into the sidecar.

    `text` (refined or original, no suffixes) is what a FLUX first-frame prompt uses;
    `model_text` (with " {fps} FPS. {m} motion score.") is what T5 and CLIP encode.
    """

    original: str
    refined: str | None
    motion_score: int
    motion_source: MotionSource
    model_text: str
    notices: list[str] = field(default_factory=list)
    refiner: str | None = None  # "server", "offline", "shapes_world" or None (not refined)
    refine_endpoint: str | None = None  # display URL only: no user:password, no query
    refine_model: str | None = None
    mode: str = "t2v"

    @property
    def text(self) -> str:
        return self.refined if self.refined is not None else self.original

    def to_sidecar(self) -> dict[str, Any]:
        """JSON-ready record of the prompt handling. Holds no key by construction: the settings
        object (the only place a key lives) is never stored here."""
        return asdict(self)


def parse_motion_setting(value: str | int) -> int | Literal["dynamic"]:
    """An int 1-15 or "dynamic"; digit strings are accepted (CLI / UI values)."""
    if isinstance(value, str):
        cleaned = value.strip().lower()
        if cleaned == "dynamic":
            return "dynamic"
        if cleaned.isdigit():
            value = int(cleaned)
    if isinstance(value, int) and not isinstance(value, bool):
        if MIN_MOTION_SCORE <= value <= MAX_MOTION_SCORE:
            return value
    raise UserError(
        f"motion score must be an integer {MIN_MOTION_SCORE}-{MAX_MOTION_SCORE} or 'dynamic', "
        f"got {value!r}"
    )


def _clean_answer(answer: str) -> str:
    """One line, without the quotes chat models like to wrap captions in."""
    text = " ".join(answer.split())
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    return text


_NO_SERVER = (
    "no refinement server configured (set OPENAI_BASE_URL or --refine-base-url for a local "
    "server, or OPENAI_API_KEY for OpenAI)"
)


def _dynamic_motion(
    text: str, settings: RefineSettings, endpoint_down: bool, notices: list[str]
) -> tuple[int, MotionSource]:
    fallback = f"using the default motion score {DEFAULT_MOTION_SCORE}"
    if not settings.configured:
        notices.append(f"dynamic motion score: {_NO_SERVER}; {fallback}")
        return DEFAULT_MOTION_SCORE, "fallback"
    if endpoint_down:
        # The same endpoint just failed; asking again would only repeat the wait and the error.
        notices.append(f"dynamic motion score skipped (the server failed, see above); {fallback}")
        return DEFAULT_MOTION_SCORE, "fallback"
    try:
        answer = chat(settings, motion_messages(text), MOTION_MAX_TOKENS)
    except RefineFailure as failure:
        notices.append(f"dynamic motion score failed: {failure}; {fallback}")
        return DEFAULT_MOTION_SCORE, "fallback"
    score = parse_motion_score(answer)
    if score is None:
        shown = redact(answer, settings.api_key)[:60]
        notices.append(
            f"dynamic motion score: {settings.display_url()} (model '{settings.model}') answered "
            f"{shown!r}, not a score {MIN_MOTION_SCORE}-{MAX_MOTION_SCORE}; {fallback}"
        )
        return DEFAULT_MOTION_SCORE, "fallback"
    return score, "dynamic"


def prepare_prompt(
    prompt: str,
    *,
    refine: bool,
    motion_score: str | int,
    mode: str = "t2v",
    ref_image: str | None = None,
    settings: RefineSettings | None = None,
    vocabulary: str | None = None,
    fps: int = 24,
) -> PreparedPrompt:
    """Refine (optionally), pick the motion score and build the encoder text for one prompt.

    refine:       ask the configured OpenAI-compatible server; without one, the deterministic
                  offline refiner is used.
    vocabulary:   the closed vocabulary of the preset's model ("shapes-world" for the demo):
                  the prompt is always mapped onto it (never sent to a server) and a notice
                  says what was understood.
    motion_score: 1-15, or "dynamic" to ask the server (default 4 with a notice on failure).
    mode:         "t2v", "t2i" (first-frame caption for T2I2V) or "i2v" (sends `ref_image` to a
                  vision model). The official script refines i2v/v2v jobs with "t2i".
    settings:     endpoint; None reads OPENAI_BASE_URL / OPENAI_API_KEY.
    fps:          the FPS written into the suffix (the official fps_save, 24 by default).

    Server failures never raise: the original prompt is used and `notices` says why.
    Bad input raises UserError: empty prompt, motion score outside 1-15, unknown mode,
    missing or unreadable reference image for i2v.
    """
    if not prompt or not prompt.strip():
        raise UserError("the prompt is empty")
    motion = parse_motion_setting(motion_score)
    if mode not in MODES:
        raise UserError(f"refine mode must be one of {', '.join(MODES)}, got {mode!r}")
    if isinstance(fps, bool) or not isinstance(fps, int) or fps < 1:
        raise UserError(f"fps must be a positive integer, got {fps!r}")
    settings = settings or RefineSettings.from_env()
    shapes_world = vocabulary == "shapes-world"
    if vocabulary is not None and not shapes_world:
        raise UserError(f"unknown prompt vocabulary {vocabulary!r}; known: shapes-world")
    use_server = refine and not shapes_world and settings.configured
    if use_server and mode == "i2v" and ref_image is None:
        raise UserError("refine mode 'i2v' needs a reference image (--ref IMG)")
    # Read the image before any request: a bad path is the user's error, not the server's.
    image_url = image_data_url(ref_image) if refine and mode == "i2v" and ref_image else None

    notices: list[str] = []
    refined: str | None = None
    refiner: str | None = None
    endpoint_down = False
    if shapes_world:
        refined, notice = normalize_to_shapes_world(prompt)
        refiner = "shapes_world"
        if " ".join(refined.split()) != " ".join(prompt.lower().split()).rstrip("."):
            notices.append(f"understood as '{refined}'" + (f" ({notice})" if notice else ""))
    elif use_server:
        log.info("refining the prompt with %s (model %s)", settings.display_url(), settings.model)
        messages = build_messages(mode, prompt, settings.keep_language, image_url)
        try:
            refined = _clean_answer(chat(settings, messages, REFINE_MAX_TOKENS))
            refiner = "server"
        except RefineFailure as failure:
            notices.append(f"prompt refinement failed: {failure}; using the original prompt")
            endpoint_down = failure.endpoint_down
    elif refine:
        refined = offline_refine(prompt, mode)
        refiner = "offline"
        notices.append(f"{_NO_SERVER}; used the offline refiner")

    text = refined if refined is not None else prompt.strip()
    if motion == "dynamic":
        score, source = _dynamic_motion(text, settings, endpoint_down, notices)
    else:
        score, source = motion, "fixed"

    # Record the endpoint whenever it was asked, also when it failed (the notice says how).
    asked_server = use_server or (motion == "dynamic" and settings.configured)
    return PreparedPrompt(
        original=prompt,
        refined=refined,
        motion_score=score,
        motion_source=source,
        model_text=add_motion_suffix(add_fps_suffix(text, fps), score),
        notices=notices,
        refiner=refiner,
        refine_endpoint=settings.display_url() if asked_server else None,
        refine_model=settings.model if asked_server else None,
        mode=mode,
    )
