"""A video's settings inside the mp4 itself, so a video shared alone still says how it was made.

`OutputWriter.write` puts the sidecar's JSON text (the same text as `NNNN.json`) into the mp4's
`comment` tag, the standard container comment that ffprobe, players and PyAV show. Reading gives
back the settings dict from an mp4 (its tag) or from a sidecar (`NNNN.json`), with a clear error
for a file that carries none.
"""

from __future__ import annotations

import json
from pathlib import Path

from opensora.errors import UserError
from opensora.io.video import PathLike, is_video_path, read_metadata

SETTINGS_TAG = "comment"
REQUIRED_KEYS = ("preset", "prompt")  # what makes a JSON object a video's settings


def settings_tags(sidecar_text: str) -> dict[str, str]:
    """The container tags that carry a video's sidecar text."""
    return {SETTINGS_TAG: sidecar_text}


def _parse_settings(text: str, where: str) -> dict:
    try:
        settings = json.loads(text)
    except json.JSONDecodeError as err:
        raise UserError(f"{where} is not JSON ({err.msg} at line {err.lineno})") from None
    if not isinstance(settings, dict) or not all(isinstance(settings.get(k), str) for k in REQUIRED_KEYS):
        raise UserError(f"{where} is not an Open-Sora Studio settings object (it needs "
                        f"{' and '.join(REQUIRED_KEYS)} text fields)")
    return settings


def embedded_settings(path: PathLike) -> dict:
    """The settings carried in a video's `comment` tag (UserError for a non-video or a video without them)."""
    path = Path(path)
    tags = read_metadata(path)
    text = tags.get(SETTINGS_TAG)
    if not text:
        raise UserError(f"{path} carries no Open-Sora Studio settings: its mp4 has no `{SETTINGS_TAG}` tag "
                        "(videos written by this app or `python -m opensora generate` have one)")
    try:
        return _parse_settings(text, f"its `{SETTINGS_TAG}` tag")
    except UserError as err:  # a comment some other program wrote
        raise UserError(f"{path} carries no Open-Sora Studio settings: {err}") from None


def settings_from_file(path: PathLike) -> dict:
    """A video's settings from the video (its tag) or from its sidecar (`NNNN.json`)."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        if not path.is_file():
            raise UserError(f"settings file not found: {path}")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise UserError(f"cannot read {path}: {err}") from None
        return _parse_settings(text, str(path))
    if not is_video_path(path):
        raise UserError(f"{path.name} is neither a video nor a settings sidecar: give an mp4 made by this app "
                        "or its .json")
    return embedded_settings(path)
