"""Dynamic motion score: ask the server for a 1-15 score and parse the answer strictly."""

from __future__ import annotations

import json
import re
from typing import Any

DEFAULT_MOTION_SCORE = 4  # Open-Sora 2.0's 256px/768px inference default
MIN_MOTION_SCORE = 1
MAX_MOTION_SCORE = 15

SYSTEM_MOTION = (
    "You rate how much a video will move. The motion score is the VMAF motion value that "
    "FFmpeg measures on a clip: about 1 for a nearly static shot, about 4 for an ordinary clip "
    "such as a person walking on a runway, and up to 15 for very fast, chaotic movement. "
    "Read the video description and predict the best motion score for it, an integer from 1 "
    'to 15. Answer with JSON only, exactly in the form {"motion_score": 7}.'
)

# No response_format: LM Studio, older vLLM and llama.cpp builds reject some of its variants;
# the instruction plus the strict parser below works everywhere.


def motion_messages(prompt: str) -> list[dict[str, Any]]:
    return [
        {"role": "system", "content": SYSTEM_MOTION},
        {"role": "user", "content": prompt.strip()},
    ]


_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)
_PLAIN = re.compile(r"^(\d{1,3})(?:\s+motion\s+score)?$", re.IGNORECASE)


def parse_motion_score(answer: str) -> int | None:
    """The score in `answer`, or None when it is not one of the accepted forms within 1-15.

    Accepted: `{"motion_score": 7}` (also "7" as a JSON string value), `7 motion score`, `7`;
    surrounding whitespace, quotes, a final "." and a ```json fence are tolerated.
    """
    text = answer.strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1).strip()
    value: Any = None
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError:
            return None
        if not isinstance(data, dict) or set(data) != {"motion_score"}:
            return None
        value = data["motion_score"]
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            return None
    else:
        match = _PLAIN.match(text.strip("\"'").rstrip(".").strip())
        if not match:
            return None
        value = int(match.group(1))
    return value if MIN_MOTION_SCORE <= value <= MAX_MOTION_SCORE else None
