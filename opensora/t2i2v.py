"""Text -> image -> video, as the official t2i2v configs: FLUX.1-dev draws the first frame from the
prompt, and the video model animates it as an `i2v_head` reference.

The image prompt is the prompt without the FPS / motion suffixes, encoded by the video model's own
T5 / CLIP (loaded once, shared). The image is drawn at the preset's bucket `image_resolution` x the
video's aspect ratio, with the video's seed and number of steps (FLUX's distilled guidance 4.0, no
CFG). The official script saves it as a PNG and reads that back as the reference, so here it is
rounded to 8 bits the same way and brought to the video's size with the reference transform
(resize to fill, centre crop).
"""

from collections.abc import Callable

import torch
from PIL import Image

from opensora.generation_settings import GenerationSettings
from opensora.io.reference import reference_from_image
from opensora.io.video import image_to_uint8
from opensora.models.flux_image import flux_text_to_image
from opensora.presets import Preset
from opensora.sampling.denoise import GenerationCancelled

MessageCallback = Callable[[str], None]


def image_size(preset: Preset, settings: GenerationSettings) -> tuple[int, int]:
    """(height, width) of the FLUX image: the video's aspect ratio in the image resolution's table."""
    return preset.image_size(settings.image_resolution, settings.aspect_ratio)


@torch.no_grad()
def draw_first_frame(
    flux, t5_txt: torch.Tensor, clip_vec: torch.Tensor, preset: Preset, settings: GenerationSettings,
    on_message: MessageCallback | None = None, cancel_event=None,
) -> torch.Tensor:
    """The FLUX image (3, H, W) in [-1, 1] for one-sample `settings`; `flux` = (transformer, autoencoder),
    t5_txt / clip_vec the encoded image prompt (1 row). `cancel_event` is checked after each step."""
    transformer, vae = flux
    height, width = image_size(preset, settings)

    def step(i: int, total: int) -> None:
        if cancel_event is not None and cancel_event.is_set():
            raise GenerationCancelled(f"cancelled while drawing the first frame (FLUX step {i + 1} of {total})")
        if on_message is not None:
            on_message(f"drawing the first frame with FLUX ({width}x{height}): step {i + 1}/{total}")

    return flux_text_to_image(transformer, vae, t5_txt, clip_vec, height, width, settings.num_steps,
                              seed=settings.seed, callback=step)


def first_frame_reference(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The image as the video's i2v_head reference frame (3, 1, height, width) in [-1, 1]: 8-bit as
    its PNG, resized and centre-cropped to the video bucket."""
    return reference_from_image(Image.fromarray(image_to_uint8(image), "RGB"), height, width)
