"""Build the three components of an Open-Sora 1.2 preset: STDiT3, the v1.2 VAE, the masked T5.

Official presets read `OpenSora-STDiT-v3/model.safetensors` and `OpenSora-VAE-v1.2/model.safetensors`
unchanged (every key checked) and the T5-XXL folder shared with Open-Sora 2.0; random presets draw
every weight from the preset's seed, through the same classes.
"""

import torch
from safetensors import SafetensorError

from opensora.checkpoints import checkpoint_root, require_files
from opensora.errors import UserError
from opensora.models.stdit3 import STDiT3, build_stdit3, load_stdit3
from opensora.models.text_encoders import T5MaskedEncoder
from opensora.models.vae_v1_2 import VideoVAEV12, build_vae_v1_2, load_vae_v1_2
from opensora.presets import Preset


def load_components_v1_2(
    preset: Preset, ckpt_dir=None, device: str = "cpu", dtype: torch.dtype = torch.float32
) -> tuple[STDiT3, VideoVAEV12, T5MaskedEncoder]:
    """(transformer, vae, text_encoder) ready for inference."""
    max_length = preset.text.t5_max_length
    if preset.weights == "random":
        with torch.random.fork_rng():
            torch.manual_seed(preset.seed)
            transformer = build_stdit3(preset.stdit3)
            vae = build_vae_v1_2(preset.vae)
        # The random T5 is as wide as the captions STDiT3 reads.
        text = T5MaskedEncoder.random(preset.stdit3.caption_channels, max_length, preset.text, preset.seed + 1)
        if dtype != torch.float32:  # diffusers warns on fp32 -> fp32 casts
            transformer, vae, text = transformer.to(dtype=dtype), vae.to(dtype=dtype), text.to(dtype=dtype)
        return transformer.to(device).eval(), vae.to(device).eval(), text.to(device)
    require_files(preset, ckpt_dir)
    root = checkpoint_root(preset, ckpt_dir)
    transformer = load_stdit3(root / preset.files.stdit3, preset.stdit3, dtype, device)
    vae = load_vae_v1_2(root / preset.files.vae, preset.vae, dtype, device)
    try:
        text = T5MaskedEncoder.from_pretrained(root / preset.files.t5, max_length, dtype, device)
    except (OSError, ValueError, SafetensorError) as err:  # incomplete or corrupt folders
        raise UserError(f"could not load the T5 encoder from {root / preset.files.t5}: {err}") from None
    return transformer, vae, text
