"""Weight sizes of a preset's components, counted on the meta device (nothing is allocated or read).

T5 and CLIP come from their config.json when the checkpoint folder has one, from the official
configs in presets/profiles/memory.toml otherwise; random presets build theirs as the loader does.
The autoencoder is the preset's (HunyuanVideo VAE or Video DC-AE); a preset with a [flux] part
also counts FLUX (transformer and autoencoder) for text -> image -> video.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

from opensora.configs import DCAEConfig, MMDiTConfig
from opensora.loading import build_autoencoder, flux_configs
from opensora.memory.profiles import official_text_encoder_configs
from opensora.models.mmdit import build_mmdit
from opensora.offload import FP8_STORAGE
from opensora.presets import Preset


@dataclass(frozen=True)
class MMDiTSizes:
    params: int
    largest_block: int  # parameters of the largest transformer block (one offload group)
    outside_blocks: int  # embeddings, final layer: always on the device
    largest_leaf: int  # parameters of the largest single layer (leaf-level offload)
    fp8_params: int  # parameters stored in fp8 under layerwise casting (the rest keep the dtype)
    fp8_largest_block: int
    hidden: int


@dataclass(frozen=True)
class EncoderSizes:
    params: int
    quantizable: int  # parameters in Linear layers bitsandbytes converts (T5 keeps `wo` unquantised)
    quantizable_rows: int  # output rows of those layers (int8 keeps one fp32 scale per row)
    largest_leaf: int
    width: int


@dataclass(frozen=True)
class ComponentSizes:
    mmdit: MMDiTSizes
    t5: EncoderSizes
    clip: EncoderSizes
    vae_params: int
    vae_decoder_width: int  # channels at full resolution: what decode activations scale with
    flux: MMDiTSizes | None = None  # FLUX.1-dev's transformer, for presets with a [flux] part
    flux_vae_params: int = 0
    flux_vae_decoder_width: int = 0


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters()) + sum(b.numel() for b in module.buffers())


def mmdit_sizes(preset: Preset) -> MMDiTSizes:
    return transformer_sizes(preset.mmdit)


def transformer_sizes(config: MMDiTConfig) -> MMDiTSizes:
    """An MMDiT-shaped transformer (the video model's, or FLUX's) counted on the meta device."""
    with torch.device("meta"):
        model = build_mmdit(config)
    blocks = [*model.transformer_blocks, *model.single_transformer_blocks]
    params = _count(model)
    largest_leaf = max(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
    model.enable_layerwise_casting(storage_dtype=FP8_STORAGE, compute_dtype=torch.bfloat16)  # meta: no copy
    fp8 = lambda module: sum(p.numel() for p in module.parameters() if p.dtype == FP8_STORAGE)  # noqa: E731
    return MMDiTSizes(
        params=params, largest_block=max(_count(b) for b in blocks), outside_blocks=params - sum(_count(b) for b in blocks),
        largest_leaf=largest_leaf, fp8_params=fp8(model), fp8_largest_block=max(fp8(b) for b in blocks),
        hidden=config.hidden_size,
    )


def _config_fields(folder: Path | None, official_name: str) -> dict:
    if folder is not None and (folder / "config.json").is_file():
        return json.loads((folder / "config.json").read_text())
    return official_text_encoder_configs()[official_name]


def _encoder_sizes(model: nn.Module, width: int, keep: tuple[str, ...]) -> EncoderSizes:
    linears = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    quantized = [m for name, m in linears if name.rsplit(".", 1)[-1] not in keep]
    return EncoderSizes(
        params=_count(model), quantizable=sum(m.weight.numel() for m in quantized),
        quantizable_rows=sum(m.out_features for m in quantized),
        largest_leaf=max(m.weight.numel() for _, m in linears), width=width,
    )


def text_encoder_sizes(preset: Preset, root: Path | None) -> tuple[EncoderSizes, EncoderSizes]:
    if preset.weights == "random":
        text = preset.text
        # The shapes TextConditioner.random builds (byte tokenizer: 4 specials + 256 bytes).
        t5_config = T5Config(vocab_size=260, d_model=preset.mmdit.context_in_dim, d_kv=preset.mmdit.context_in_dim // text.t5_heads,
                             d_ff=text.t5_ff, num_layers=text.t5_layers, num_heads=text.t5_heads)
        clip_config = CLIPTextConfig(vocab_size=260, hidden_size=preset.mmdit.vec_in_dim, intermediate_size=text.clip_ff,
                                     num_hidden_layers=text.clip_layers, num_attention_heads=text.clip_heads,
                                     max_position_embeddings=text.clip_max_length, pad_token_id=1, bos_token_id=3,
                                     eos_token_id=1)
    else:
        t5_fields = _config_fields(None if root is None else root / preset.files.t5, "t5")
        clip_fields = _config_fields(None if root is None else root / preset.files.clip, "clip")
        t5_config = T5Config(**{k: v for k, v in t5_fields.items() if k != "architectures"})
        clip_config = CLIPTextConfig(**{k: v for k, v in clip_fields.items() if k != "architectures"})
    with torch.device("meta"):
        t5, clip = T5EncoderModel(t5_config), CLIPTextModel(clip_config)
    keep_t5 = tuple(T5EncoderModel._keep_in_fp32_modules or ())
    return _encoder_sizes(t5, t5_config.d_model, keep_t5), _encoder_sizes(clip, clip_config.hidden_size, ())


def component_sizes(preset: Preset, ckpt_root: Path | None = None) -> ComponentSizes:
    """ckpt_root: the folder holding the preset's files (for the encoders' config.json), if known."""
    if preset.weights == "bundled":
        from opensora.presets import PRESET_DIR

        ckpt_root = PRESET_DIR.parent
    with torch.device("meta"):
        vae = build_autoencoder(preset)
    widths = preset.vae.width_list if isinstance(preset.vae, DCAEConfig) else preset.vae.block_out_channels
    t5, clip = text_encoder_sizes(preset, ckpt_root)
    flux = {}
    if preset.flux is not None:
        from opensora.models.flux_image import FluxVAE

        transformer_config, flux_vae_config = flux_configs(preset)
        with torch.device("meta"):
            flux_vae = FluxVAE(flux_vae_config)
        flux = dict(flux=transformer_sizes(transformer_config), flux_vae_params=_count(flux_vae),
                    flux_vae_decoder_width=flux_vae_config.block_out_channels[0])
    return ComponentSizes(
        mmdit=mmdit_sizes(preset), t5=t5, clip=clip, vae_params=_count(vae), vae_decoder_width=widths[0], **flux,
    )
