"""Stage caption: a vision model on an OpenAI-compatible server writes each clip's ``text``.

A few evenly spaced frames go to the model as JPEG data URLs after the instruction, in one user
message, through ``opensora.refine.server.chat`` (the same client, retries on 429 / timeouts /
connection errors with exponential backoff, and one-line failures that never show the key).
Rows that already have a caption are kept as they are (unless ``overwrite``), so rerunning on
an output only asks for the missing ones. A failed request keeps the row uncaptioned with the
reason in ``caption_error``; the summary counts them.

``rate_limit`` caps requests per second over all workers: each worker spaces its own requests
``workers / rate_limit`` seconds apart (retries of one request are paced by the backoff instead).
The key comes only from OPENAI_API_KEY (never a flag, never the progress file).
"""

from __future__ import annotations

import base64
import io
import time
from dataclasses import dataclass, field, replace

import numpy as np
from PIL import Image

from opensora.errors import UserError
from opensora.refine.server import RefineFailure, chat
from opensora.refine.settings import DEFAULT_MODEL, RefineSettings
from training.curation.frames import DecodeError, decode_frames, evenly_spaced, row_frame_count
from training.curation.stage import ItemResult, Stage
from training.curation.table import Row

DEFAULT_INSTRUCTION = (
    "These images are frames of one short video clip, in order. Write one paragraph in English that "
    "describes the video for a text-to-video model: the main subjects and what they look like, what "
    "they do and how they move, the setting and background, the lighting and colours, and how the "
    "camera moves. Describe only what is visible; do not mention frames, images or a video."
)
JPEG_QUALITY = 90
RUNTIME_ONLY = {"resume": False}  # a resumed run may change these: they do not change a caption (runner.py)


@dataclass(frozen=True)
class CaptionConfig:
    instruction: str = DEFAULT_INSTRUCTION
    model: str = DEFAULT_MODEL
    frames: int = 3
    frame_size: int = 512  # longest side of each frame sent, in pixels
    max_tokens: int = 300
    overwrite: bool = False  # caption rows that already have text too
    base_url: str = field(default="", metadata=RUNTIME_ONLY)  # "": OPENAI_BASE_URL, else the OpenAI API
    timeout_s: float = field(default=60.0, metadata=RUNTIME_ONLY)
    retries: int = field(default=3, metadata=RUNTIME_ONLY)
    backoff_s: float = field(default=1.0, metadata=RUNTIME_ONLY)
    rate_limit: float = field(default=0.0, metadata=RUNTIME_ONLY)  # requests/s over all workers; 0: none
    workers: int = field(default=1, metadata=RUNTIME_ONLY)

    def __post_init__(self) -> None:
        if not self.instruction.strip():
            raise UserError("--caption-instruction is empty; the model needs to be told what to write")
        for name, value, low in (("--caption-frames", self.frames, 1), ("--caption-frame-size", self.frame_size, 32),
                                 ("--caption-max-tokens", self.max_tokens, 1), ("--caption-retries", self.retries, 0)):
            if value < low:
                raise UserError(f"{name} is {value}; must be >= {low}")
        if self.rate_limit < 0 or self.backoff_s < 0:
            raise UserError(f"--caption-rate-limit {self.rate_limit} and --caption-backoff {self.backoff_s} must be >= 0")
        self.settings()  # checks the URL and the timeout

    def settings(self) -> RefineSettings:
        base = RefineSettings.from_env(base_url=self.base_url or None, model=self.model, timeout_s=self.timeout_s,
                                       backoff_s=self.backoff_s)
        return replace(base, retries=self.retries)


def skip_reason(config: CaptionConfig) -> str | None:
    if config.settings().configured:
        return None
    return ("no captioning server: pass --caption-base-url (or set OPENAI_BASE_URL) for a local "
            "OpenAI-compatible server, or set OPENAI_API_KEY for the OpenAI API")


def frame_data_url(rgb: np.ndarray, size: int) -> str:
    image = Image.fromarray(rgb)
    image.thumbnail((size, size))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def caption_messages(instruction: str, data_urls: list[str]) -> list[dict]:
    images = [{"type": "image_url", "image_url": {"url": url}} for url in data_urls]
    return [{"role": "user", "content": [{"type": "text", "text": instruction}, *images]}]


_last_request = 0.0  # per worker process: when this worker last sent a request


def _wait_for_rate_limit(config: CaptionConfig) -> None:
    global _last_request
    if config.rate_limit > 0:
        interval = config.workers / config.rate_limit
        delay = _last_request + interval - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    _last_request = time.monotonic()


def caption_row(row: Row, config: CaptionConfig) -> ItemResult:
    if (row.get("text") or "").strip() and not config.overwrite:
        return ItemResult(rows=[dict(row, caption_error="")], counts={"already captioned": 1})
    try:
        frames = decode_frames(row, evenly_spaced(row_frame_count(row), config.frames))
    except DecodeError as e:
        return ItemResult.drop("unreadable", str(e))
    if not frames:
        return ItemResult.drop("unreadable", f"no frames decoded from {row['path']}")
    messages = caption_messages(config.instruction, [frame_data_url(f, config.frame_size) for f in frames.values()])
    _wait_for_rate_limit(config)
    try:
        text = " ".join(chat(config.settings(), messages, config.max_tokens).split())
    except RefineFailure as e:
        return ItemResult(rows=[dict(row, text="", caption_error=str(e))], reason="caption failed",
                          detail=f"{row['path']}: {e}")
    return ItemResult(rows=[dict(row, text=text, caption_error="")])


STAGE = Stage(name="caption", columns=("text", "caption_error"), process=caption_row, unit="clip")
