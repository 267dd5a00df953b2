"""The text Open-Sora 1.2 gives T5: the prompt, the score conditioning appended in the official
inference format, then the PixArt/DeepFloyd caption cleaner applied twice
(sampler_spec_v1_2.md, section 3.1):

    "A car driving on the ocean.", aes 6.5, flow 4.0, camera "pan right" ->
    "a car driving on the ocean. aesthetic score: 6.5. motion score: 4.0. camera motion: pan right."

The cleaner here follows the spec's rules that change ordinary prompts (url-unquote, lower case,
URLs, HTML, handles, CJK, dashes and quotes, the punctuation the official one removes, whitespace);
the official one also runs ftfy and many rules for scraped captions (file names, shop phrases)
that prompts typed by a user rarely hit.
"""

import html
import math
import re
import urllib.parse

from opensora.errors import UserError

DEFAULT_AESTHETIC_SCORE = 6.5
# The choices of the official Gradio app ("none" there means no camera conditioning).
CAMERA_MOTIONS = ("pan right", "pan left", "tilt up", "tilt down", "zoom in", "zoom out", "static")

AESTHETIC_RANGE = (0.0, 10.0)
MOTION_RANGE = (0.0, 100.0)

# The characters the official cleaner replaces by a space (sampler_spec_v1_2.md, 3.1).
_BAD_PUNCT = re.compile(r"[#®•©™&@·º½¾¿¡§~()\[\]{}|\\/*]+")
_URL = re.compile(r"\b(?:https?://|www\.)\S+")
_CJK = re.compile("[\u3100-\u9fff]+")  # CJK strokes, enclosed letters, unified ideographs
_DASHES = re.compile("[\u2010-\u2015\u2212\ufe58\ufe63\uff0d]")
_DOUBLE_QUOTES = re.compile("[`´«»“”¨]")
_SINGLE_QUOTES = re.compile("[‘’]")


def _checked_score(name: str, value: float, allowed: tuple[float, float]) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not (
        allowed[0] <= value <= allowed[1]
    ):
        raise UserError(f"{name} {value!r} must be a number in {allowed[0]:g}..{allowed[1]:g}")
    return float(value)


def append_scores(
    prompt: str, aes: float | None = DEFAULT_AESTHETIC_SCORE, flow: float | None = None,
    camera_motion: str | None = None,
) -> str:
    """The official `append_score_to_prompts` for one prompt: each score is skipped when the prompt
    already names it. One space before, a period after, one decimal."""
    if aes is not None and "aesthetic score:" not in prompt:
        prompt += f" aesthetic score: {_checked_score('aesthetic score', aes, AESTHETIC_RANGE):.1f}."
    if flow is not None and "motion score:" not in prompt:
        prompt += f" motion score: {_checked_score('motion score', flow, MOTION_RANGE):.1f}."
    if camera_motion is not None and "camera motion:" not in prompt:
        if camera_motion not in CAMERA_MOTIONS:
            raise UserError(f"camera motion {camera_motion!r} is not one of: {', '.join(CAMERA_MOTIONS)}")
        prompt += f" camera motion: {camera_motion}."
    return prompt


def clean_caption(text: str) -> str:
    text = html.unescape(urllib.parse.unquote_plus(text)).strip().lower()
    text = _URL.sub("", text)
    text = re.sub(r"<[^>]*>", " ", text)  # HTML tags
    text = re.sub(r"@\w+", "", text)  # @handles
    text = _CJK.sub("", text)
    text = _DASHES.sub("-", text)
    text = _SINGLE_QUOTES.sub("'", _DOUBLE_QUOTES.sub('"', text))
    text = re.sub(r"[\"']{2,}", '"', text)
    text = re.sub(r"\.{2,}", " ", text)  # ellipses
    text = _BAD_PUNCT.sub(" ", text)
    text = re.sub(r"\s+\.\s+", " ", text)  # a lone " . "
    return re.sub(r"\s+", " ", text).strip()


def t5_prompt(
    prompt: str, aes: float | None = DEFAULT_AESTHETIC_SCORE, flow: float | None = None,
    camera_motion: str | None = None,
) -> str:
    """The exact string the official 1.2 inference encodes with T5."""
    return clean_caption(clean_caption(append_scores(prompt, aes, flow, camera_motion)))
