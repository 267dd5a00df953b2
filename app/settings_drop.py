""""Load settings from a video": an mp4 made by this app (it carries its settings in its metadata) or
its .json sidecar, dropped onto a video tab, fills the form the way History's "Reuse settings" does
(`app.ui` wires both to the same fill)."""

from __future__ import annotations

import gradio as gr

from opensora.errors import UserError
from opensora.io.embedded_settings import settings_from_file

DROP_LABEL = "Load settings from a video (drop an mp4 made here, or its .json)"


def build_settings_drop() -> gr.File:
    return gr.File(label=DROP_LABEL, file_types=[".mp4", ".json"], type="filepath", height=90,
                   elem_classes=["settings-drop"])


def dropped_settings(path: str | None) -> dict | None:
    """The dropped file's settings; a file without them is one message in the page."""
    if not path:
        return None
    try:
        return settings_from_file(path)
    except UserError as err:
        raise gr.Error(str(err).replace(str(path), _name(path)), print_exception=False) from None


def _name(path: str) -> str:
    # Gradio's upload folder is noise to the user; the file's own name is what they dropped.
    from pathlib import Path

    return Path(path).name
