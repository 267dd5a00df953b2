"""Build the three components of a preset: MMDiT, VAE (the HunyuanVideo VAE, or the Video DC-AE of a
`[dc_ae]` preset), text conditioner; and FLUX.1-dev for a preset's text -> image -> video stage.

Official and bundled presets read safetensors in the official key layout (checked key by key);
random presets draw weights from the preset's seed so every run gets the same model.
"""

from pathlib import Path

import torch
from safetensors import SafetensorError

from opensora.errors import UserError
from opensora.checkpoints import check_keys, checkpoint_root, load_checked, read_shapes, require_files
from opensora.configs import DCAEConfig
from opensora.models.dc_ae import VideoDCAE, dc_ae_key_shapes, load_dc_ae
from opensora.models.hunyuan_vae import HunyuanVAE
from opensora.models.mmdit import build_mmdit
from opensora.models.mmdit_convert import official_key_shapes, official_to_diffusers
from opensora.models.text_encoders import TextConditioner
from opensora.presets import Preset


def build_autoencoder(preset: Preset) -> HunyuanVAE | VideoDCAE:
    """The preset's autoencoder with fresh weights: a Video DC-AE for `[dc_ae]`, else the HunyuanVideo VAE."""
    return VideoDCAE(preset.vae) if isinstance(preset.vae, DCAEConfig) else HunyuanVAE(preset.vae)


def vae_key_shapes(preset: Preset) -> dict[str, tuple[int, ...]]:
    if isinstance(preset.vae, DCAEConfig):
        return dc_ae_key_shapes(preset.vae)
    with torch.device("meta"):
        vae = HunyuanVAE(preset.vae)
    return {k: tuple(v.shape) for k, v in vae.model.state_dict().items()}


def load_mmdit_weights(path: Path, preset: Preset, dtype: torch.dtype, device: str):
    official = load_checked(path, official_key_shapes(preset.mmdit), MMDIT_FILE)
    with torch.device("meta"):
        model = build_mmdit(preset.mmdit)
    state = {k: v.to(dtype) for k, v in official_to_diffusers(official, preset.mmdit).items()}
    model.load_state_dict(state, strict=True, assign=True)
    return model.to(device).eval()


def load_vae_weights(path: Path, preset: Preset, dtype: torch.dtype, device: str) -> HunyuanVAE | VideoDCAE:
    if isinstance(preset.vae, DCAEConfig):
        return load_dc_ae(path, preset.vae, dtype, device)
    state = load_checked(path, vae_key_shapes(preset), VAE_FILE)
    with torch.device("meta"):
        vae = HunyuanVAE(preset.vae)
    vae.model.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=True, assign=True)
    return vae.to(device).eval()


MMDIT_FILE, VAE_FILE = "MMDiT (Open-Sora v2 layout)", "HunyuanVideo VAE"  # what a key mismatch names


def check_files(preset: Preset, ckpt_dir=None) -> None:
    """What loading would refuse, found from the files alone (headers, nothing read): missing or
    broken files, MMDiT and VAE keys and shapes. Jobs check it before the memory planner."""
    if preset.weights == "random":
        return
    require_files(preset, ckpt_dir)
    root = checkpoint_root(preset, ckpt_dir)
    mmdit = root / preset.files.mmdit
    check_keys(read_shapes(mmdit), official_key_shapes(preset.mmdit), mmdit, MMDIT_FILE)
    if not isinstance(preset.vae, DCAEConfig):
        vae = root / preset.files.vae
        check_keys(read_shapes(vae), vae_key_shapes(preset), vae, VAE_FILE)


def check_quant_applies(preset: Preset, text_encoder_quant: str | None) -> None:
    """T5 is quantised as it is read from its folder: a random-weight preset has none."""
    if text_encoder_quant is not None and preset.weights == "random":
        raise UserError(f"--text-encoder-quant {text_encoder_quant} quantises T5 as it is read from its folder; "
                        f"preset {preset.name} draws random encoders (use a preset with checkpoint files)")


def load_components(
    preset: Preset, ckpt_dir=None, device: str = "cpu", dtype: torch.dtype = torch.float32, random_mmdit: bool = False,
    text_encoder_quant: str | None = None,
):
    """(transformer, vae, text_conditioner) ready for inference.

    random_mmdit: draw the MMDiT from the preset's seed instead of reading its file (training a
    model from scratch on top of trained VAE and text encoders, as the demo model is made).
    text_encoder_quant: None, "int8" or "nf4": T5 read from its folder through bitsandbytes (a
    random-weight preset has no folder to read: refused).
    """
    check_quant_applies(preset, text_encoder_quant)
    if preset.weights == "random":
        with torch.random.fork_rng():
            torch.manual_seed(preset.seed)
            transformer = build_mmdit(preset.mmdit)
            vae = build_autoencoder(preset)
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
        text = TextConditioner.from_pretrained(root / preset.files.t5, root / preset.files.clip, preset.text, dtype, device,
                                               quant=text_encoder_quant)
    except (OSError, ValueError, SafetensorError) as err:  # incomplete or corrupt folders
        raise UserError(
            f"could not load the text encoders from {root / preset.files.t5} and {root / preset.files.clip}: {err}"
        ) from None
    return transformer, vae, text


def flux_configs(preset: Preset):
    """(transformer MMDiTConfig, FluxVAEConfig) of the preset's `[flux]` part: FLUX.1-dev's, or for a
    random-weight preset the tiny FLUX, as wide as its T5 / CLIP."""
    from opensora.configs import FluxVAEConfig
    from opensora.models.flux_image import FLUX_DEV, TINY_FLUX_VAE, tiny_flux_config

    if preset.flux is None:
        raise UserError(f"preset {preset.name} has no FLUX model (no [flux] part): "
                        "text -> image -> video is not available")
    if preset.weights == "random":
        return tiny_flux_config(preset.mmdit.context_in_dim, preset.mmdit.vec_in_dim), TINY_FLUX_VAE
    return FLUX_DEV, FluxVAEConfig()


def load_flux(preset: Preset, ckpt_dir=None, device: str = "cpu", dtype: torch.dtype = torch.float32):
    """(FLUX transformer, FLUX autoencoder) of the preset's `[flux]` part (see `flux_configs`): read from
    the official files, or drawn from the preset's seed for a random-weight preset."""
    from opensora.models.flux_image import load_flux_transformer, load_flux_vae, tiny_random_flux

    transformer_config, vae_config = flux_configs(preset)
    if preset.weights == "random":
        transformer, vae = tiny_random_flux(preset.mmdit.context_in_dim, preset.mmdit.vec_in_dim, preset.seed + 2)
        if dtype != torch.float32:
            transformer, vae = transformer.to(dtype=dtype), vae.to(dtype=dtype)
        return transformer.to(device), vae.to(device)
    require_files(preset, ckpt_dir, roles=("flux", "flux_ae"))
    root = checkpoint_root(preset, ckpt_dir)
    transformer = load_flux_transformer(root / preset.flux.transformer, transformer_config, dtype, device)
    vae = load_flux_vae(root / preset.flux.autoencoder, vae_config, dtype, device)
    return transformer, vae
