"""Build the three components of a preset: MMDiT, VAE, text conditioner.

Official and bundled presets read safetensors in the official key layout (checked key by key);
random presets draw weights from the preset's seed so every run gets the same model.
"""

from pathlib import Path

import torch
from safetensors import SafetensorError

from opensora.errors import UserError
from opensora.checkpoints import checkpoint_root, load_checked, require_files
from opensora.models.hunyuan_vae import HunyuanVAE
from opensora.models.mmdit import build_mmdit
from opensora.models.mmdit_convert import official_key_shapes, official_to_diffusers
from opensora.models.text_encoders import TextConditioner
from opensora.presets import Preset


def vae_key_shapes(preset: Preset) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        vae = HunyuanVAE(preset.vae)
    return {k: tuple(v.shape) for k, v in vae.model.state_dict().items()}


def load_mmdit_weights(path: Path, preset: Preset, dtype: torch.dtype, device: str):
    official = load_checked(path, official_key_shapes(preset.mmdit), "MMDiT (Open-Sora v2 layout)")
    with torch.device("meta"):
        model = build_mmdit(preset.mmdit)
    state = {k: v.to(dtype) for k, v in official_to_diffusers(official, preset.mmdit).items()}
    model.load_state_dict(state, strict=True, assign=True)
    return model.to(device).eval()


def load_vae_weights(path: Path, preset: Preset, dtype: torch.dtype, device: str) -> HunyuanVAE:
    state = load_checked(path, vae_key_shapes(preset), "HunyuanVideo VAE")
    with torch.device("meta"):
        vae = HunyuanVAE(preset.vae)
    vae.model.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=True, assign=True)
    return vae.to(device).eval()


def load_components(
    preset: Preset, ckpt_dir=None, device: str = "cpu", dtype: torch.dtype = torch.float32, random_mmdit: bool = False
):
    """(transformer, vae, text_conditioner) ready for inference.

    random_mmdit: draw the MMDiT from the preset's seed instead of reading its file (training a
    model from scratch on top of trained VAE and text encoders, as the demo model is made).
    """
    if preset.weights == "random":
        with torch.random.fork_rng():
            torch.manual_seed(preset.seed)
            transformer = build_mmdit(preset.mmdit)
            vae = HunyuanVAE(preset.vae)
        text = TextConditioner.random(
            preset.text, preset.mmdit.context_in_dim, preset.mmdit.vec_in_dim, preset.seed + 1
        )
        if dtype != torch.float32:  # diffusers warns on fp32 -> fp32 casts
            transformer, vae, text = transformer.to(dtype=dtype), vae.to(dtype=dtype), text.to(dtype=dtype)
        return transformer.to(device).eval(), vae.to(device).eval(), text.to(device)
    require_files(preset, ckpt_dir, roles=("vae", "t5", "clip") if random_mmdit else None)
    root = checkpoint_root(preset, ckpt_dir)
    if random_mmdit:
        with torch.random.fork_rng():
            torch.manual_seed(preset.seed)
            transformer = build_mmdit(preset.mmdit).to(device, dtype).eval()
    else:
        transformer = load_mmdit_weights(root / preset.files.mmdit, preset, dtype, device)
    vae = load_vae_weights(root / preset.files.vae, preset, dtype, device)
    try:
        text = TextConditioner.from_pretrained(root / preset.files.t5, root / preset.files.clip, preset.text, dtype, device)
    except (OSError, ValueError, SafetensorError) as err:  # incomplete or corrupt folders
        raise UserError(
            f"could not load the text encoders from {root / preset.files.t5} and {root / preset.files.clip}: {err}"
        ) from None
    return transformer, vae, text
