"""An image input that says which upload is not an image, instead of Gradio's preprocessing trace."""

from __future__ import annotations

import gradio as gr
from PIL import Image, UnidentifiedImageError


class ReferenceImage(gr.Image):
    """`gr.Image` (same browser widget) whose upload of a non-image (a text file renamed .png)
    becomes one clear message naming the file."""

    is_template = True  # render with gr.Image's frontend

    def preprocess(self, payload):
        try:
            return super().preprocess(payload)
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as err:
            name = getattr(payload, "orig_name", None) or getattr(payload, "path", "the upload")
            raise gr.Error(f"{name} is not a readable image ({type(err).__name__}); upload a PNG, JPEG or WebP",
                           print_exception=False) from None
