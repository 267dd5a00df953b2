"""What the refinement server is told: system instructions, few-shot examples, messages.

Written for this project (same intent as Open-Sora 2.0's GPT-4o prompts, own wording): turn a
short idea into one detailed, visual, present-tense caption in the style the model was trained
on, covering subject, action, scene, camera and lighting, and never adding on-screen text.
"""

from __future__ import annotations

import base64
import mimetypes
from pathlib import Path
from typing import Any

from opensora.errors import UserError

MODES = ("t2v", "t2i", "i2v")
MAX_IMAGE_BYTES = 20 * 1024 * 1024  # what hosted vision endpoints accept per image

_COMMON_RULES = (
    "Write exactly one description and nothing else: no title, no list, no quotes, no notes. "
    "Use the present tense and plain, concrete, everyday words. "
    "Never add captions, subtitles, logos, watermarks or any written text to the picture "
    "unless the idea explicitly asks for it. "
    "Do not just make the idea longer: add what a viewer would see. "
    "Keep about the length of the examples (60 to 120 words)."
)

SYSTEM_T2V = (
    "You help a team that makes short videos. A user gives you a brief idea, and you turn it "
    "into a single rich caption that another model will use to render the clip. Describe the "
    "main subject and how it looks, what it does from start to end, the setting, the camera "
    "(shot size, angle and movement) and the light and mood. " + _COMMON_RULES
)

SYSTEM_T2I = (
    "You help a team that makes short videos. A user gives you a brief idea, and you describe "
    "the first frame of that video as a single rich image caption for a picture model. Describe "
    "the subject, its pose and the action that is about to happen, the setting, the framing and "
    "the light. Do not mention camera moves, cuts, scene changes or changes of viewpoint. "
    + _COMMON_RULES
)

SYSTEM_I2V = (
    "You help a team that animates still pictures. You receive the first frame of a video and, "
    "optionally, a short idea from the user. Write one complete, flowing caption of the video "
    "that starts from this exact picture: what is in it and how it moves or what happens next. "
    "If the user gives no motion, invent a natural one that fits the picture. Start directly "
    "with the content, for example 'A close-up of ...' or 'A wide view of ...', never with "
    "'The image shows'. " + _COMMON_RULES
)

# Own examples: short idea -> caption in the trained style (lower-case, visual, present tense).
FEW_SHOT_T2V: tuple[tuple[str, str], ...] = (
    (
        "old fisherman at dawn",
        "an elderly fisherman in a faded yellow raincoat stands at the bow of a small wooden "
        "boat, slowly pulling a wet net over the side as the boat rocks on calm grey water. "
        "thin mist hangs over the harbour behind him, where a few moored boats and a stone pier "
        "fade into the haze. the camera holds a steady medium shot from the deck, slightly below "
        "eye level. the pale light of early morning gives the scene soft edges and cool blue "
        "tones, with a faint warm glow on the horizon.",
    ),
    (
        "kids playing in autumn leaves",
        "two young children in knitted hats run through a park and jump into a large pile of "
        "orange and brown leaves, throwing handfuls into the air that drift slowly back down "
        "around them. bare trees and a winding gravel path fill the background. the camera "
        "tracks them at child height and then stops as they land, laughing, in the leaves. warm "
        "late-afternoon sunlight comes in low from the side and makes the falling leaves glow.",
    ),
    (
        "a city street at night in the rain",
        "a narrow city street glistens after heavy rain, its wet asphalt reflecting red and "
        "green neon from the shop fronts on both sides. a cyclist in a dark jacket rides "
        "through the puddles toward the camera while a few pedestrians with umbrellas hurry "
        "along the pavement. the camera slowly pushes forward at street level. light drizzle "
        "falls through the glow of the street lamps, and the mood is quiet and cinematic.",
    ),
)

FEW_SHOT_T2I: tuple[tuple[str, str], ...] = (
    (
        "a dancer on a rooftop",
        "a young dancer in a flowing white dress balances on one foot on a flat city rooftop, "
        "arms stretched wide and hair caught by the wind, about to spin. water tanks and a "
        "skyline of glass towers stand behind her. she is framed full-length from a low angle "
        "against a pale evening sky lit by a soft orange sunset.",
    ),
    (
        "a chef cooking",
        "a chef in a white jacket tosses sliced vegetables in a steaming black wok over a high "
        "flame, a few pieces in mid-air above the pan. stainless steel counters and hanging "
        "utensils fill the busy kitchen behind him. medium shot at chest height, lit by warm "
        "overhead lamps with bright flashes from the fire.",
    ),
)


def _language_clause(keep_language: bool) -> str:
    if keep_language:
        return "in the same language as the user's idea"
    return "in English"


def _request_text(mode: str, prompt: str, keep_language: bool) -> str:
    kind = "image caption of the first frame" if mode == "t2i" else "video caption"
    basis = " and the attached picture" if mode == "i2v" else ""
    # The idea is quoted and padded with spaces, like the official requests.
    return (
        f"Write one detailed {kind} {_language_clause(keep_language)} for this idea{basis}, "
        f'or improve it if it is already a caption: " {prompt.strip()} "'
    )


def _few_shot_request(mode: str, example: str) -> str:
    kind = "image caption of the first frame" if mode == "t2i" else "video caption"
    return f'Write one detailed {kind} for this idea: " {example} "'


def build_messages(
    mode: str, prompt: str, keep_language: bool = False, image_url: str | None = None
) -> list[dict[str, Any]]:
    """Chat messages for one refinement: system, few-shot pairs, then the user's idea.

    For "i2v" the last user message carries a text part and an image_url part (a data URL),
    the layout every OpenAI-compatible vision server understands.
    """
    if mode not in MODES:
        raise UserError(f"refine mode must be one of {', '.join(MODES)}, got {mode!r}")
    system = {"t2v": SYSTEM_T2V, "t2i": SYSTEM_T2I, "i2v": SYSTEM_I2V}[mode]
    shots = FEW_SHOT_T2I if mode == "t2i" else FEW_SHOT_T2V
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}]
    for idea, caption in shots:
        messages.append({"role": "user", "content": _few_shot_request(mode, idea)})
        messages.append({"role": "assistant", "content": caption})
    text = _request_text(mode, prompt, keep_language)
    if mode == "i2v":
        if image_url is None:
            raise UserError("refine mode 'i2v' needs a reference image (--ref IMG)")
        content: Any = [
            {"type": "text", "text": text},
            {"type": "image_url", "image_url": {"url": image_url}},
        ]
    else:
        content = text
    messages.append({"role": "user", "content": content})
    return messages


_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF8", "image/gif"),
    (b"BM", "image/bmp"),
)


def image_data_url(path: str | Path) -> str:
    """Read a reference image into a base64 data URL (MIME from the name, else the magic bytes)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        reason = err.strerror or err
        raise UserError(f"cannot read reference image {str(path)!r}: {reason}") from None
    if not data:
        raise UserError(f"reference image {str(path)!r} is empty")
    if len(data) > MAX_IMAGE_BYTES:
        raise UserError(
            f"reference image {str(path)!r} is {len(data) / 1e6:.1f} MB; at most 20 MB can be sent"
        )
    mime = mimetypes.guess_type(path.name)[0]
    if not mime or not mime.startswith("image/"):
        mime = next((m for magic, m in _MAGIC if data.startswith(magic)), None)
        if mime is None and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            mime = "image/webp"
    if mime is None:
        raise UserError(f"reference image {str(path)!r} is not a PNG, JPEG, WEBP, GIF or BMP file")
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
