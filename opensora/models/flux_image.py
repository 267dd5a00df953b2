"""FLUX.1-dev and its autoencoder: the image model of Open-Sora 2.0's text -> image -> video path.

The transformer is diffusers' `FluxTransformer2DModel`, built by `build_mmdit` from an `MMDiTConfig`
(FLUX.1-dev is the Open-Sora MMDiT without `cond_in`, with the guidance embedding and FLUX's own
interleaved RoPE). The official `flux1-dev.safetensors` is in Black Forest Labs' layout: fused
`qkv` in the double blocks and `linear1` = [q, k, v, mlp] in the single blocks. It is split into
Open-Sora's unfused names and then mapped by `mmdit_convert`, so both models share one mapping.

The autoencoder is diffusers' `AutoencoderKL` (16 latent channels, no quant convs); the official
`flux1-dev-ae.safetensors` is in the LDM layout, converted by diffusers' `convert_ldm_vae_checkpoint`.
Both configs live here; nothing is fetched from a hub.
"""

from pathlib import Path

import torch
from diffusers import AutoencoderKL, FluxTransformer2DModel
from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint
from torch import nn

from opensora.checkpoints import load_checked
from opensora.configs import FluxVAEConfig  # noqa: F401 - the model's config lives with the presets
from opensora.errors import UserError
from opensora.models.mmdit import MMDiTConfig, build_mmdit, mmdit_forward
from opensora.models.mmdit_convert import diffusers_to_official, official_to_diffusers
from opensora.sampling.packing import image_position_ids, pack, unpack
from opensora.sampling.schedule import make_scheduler

DISTILLED_GUIDANCE = 4.0  # the official t2i option: guidance embedding 4.0, no CFG
PATCH_SIZE = 2

# configs/diffusion/inference/plugins/t2i2v.py: img_flux
FLUX_DEV = MMDiTConfig(
    in_channels=64, vec_in_dim=768, context_in_dim=4096, hidden_size=3072, mlp_ratio=4.0, num_heads=24,
    depth=19, depth_single_blocks=38, axes_dim=(16, 56, 56), theta=10000, qkv_bias=True,
    cond_embed=False, guidance_embed=True, patch_size=PATCH_SIZE, rope="interleaved",
)


def tiny_flux_config(context_in_dim: int = 24, vec_in_dim: int = 16) -> MMDiTConfig:
    """FLUX at tiny width; text widths to match a tiny T5/CLIP (tiny-random: 24 and 16)."""
    return MMDiTConfig(
        in_channels=64, vec_in_dim=vec_in_dim, context_in_dim=context_in_dim, hidden_size=64, num_heads=2,
        depth=1, depth_single_blocks=1, axes_dim=(8, 12, 12), cond_embed=False, guidance_embed=True,
        patch_size=PATCH_SIZE, rope="interleaved",
    )


TINY_FLUX_VAE = FluxVAEConfig(block_out_channels=(8, 16, 16, 16), layers_per_block=1, norm_num_groups=4)


# ---------------------------------------------------------------------------------------------
# Transformer: Black Forest Labs layout <-> Open-Sora's unfused official layout


def _fused_names(config: MMDiTConfig) -> list[tuple[str, list[str]]]:
    """(BFL name, Open-Sora names concatenated on dim 0 to make it), weight and bias alike."""
    names = []
    for i in range(config.depth):
        for stream in ("img_attn", "txt_attn"):
            o = f"double_blocks.{i}.{stream}"
            names.append((f"{o}.qkv", [f"{o}.q_proj", f"{o}.k_proj", f"{o}.v_proj"]))
    for i in range(config.depth_single_blocks):
        o = f"single_blocks.{i}"
        names.append((f"{o}.linear1", [f"{o}.q_proj", f"{o}.k_proj", f"{o}.v_mlp"]))
    return names


def bfl_to_unfused(state: dict[str, torch.Tensor], config: MMDiTConfig) -> dict[str, torch.Tensor]:
    """Split the fused projections (views, no copies); every other key passes through."""
    out = dict(state)
    hidden = config.hidden_size
    for fused, parts in _fused_names(config):
        for suffix in ("weight", "bias"):
            tensor = out.pop(f"{fused}.{suffix}")
            sizes = [hidden, hidden, tensor.shape[0] - 2 * hidden]
            out.update({f"{p}.{suffix}": t for p, t in zip(parts, tensor.split(sizes, dim=0))})
    return out


def unfused_to_bfl(state: dict[str, torch.Tensor], config: MMDiTConfig) -> dict[str, torch.Tensor]:
    out = dict(state)
    for fused, parts in _fused_names(config):
        for suffix in ("weight", "bias"):
            out[f"{fused}.{suffix}"] = torch.cat([out.pop(f"{p}.{suffix}") for p in parts], dim=0)
    return out


def flux_key_shapes(config: MMDiTConfig = FLUX_DEV) -> dict[str, tuple[int, ...]]:
    """Every key of the official FLUX file and its shape (from the model built on the meta device)."""
    with torch.device("meta"):
        model = build_mmdit(config)
    official = unfused_to_bfl(diffusers_to_official(model.state_dict(), config), config)
    return {k: tuple(v.shape) for k, v in official.items()}


def flux_to_diffusers(state: dict[str, torch.Tensor], config: MMDiTConfig = FLUX_DEV) -> dict[str, torch.Tensor]:
    return official_to_diffusers(bfl_to_unfused(state, config), config)


def load_flux_transformer(path: Path, config: MMDiTConfig = FLUX_DEV, dtype=torch.bfloat16, device="cpu"):
    state = load_checked(Path(path), flux_key_shapes(config), "FLUX.1-dev transformer (Black Forest Labs layout)")
    with torch.device("meta"):
        model = build_mmdit(config)
    model.load_state_dict({k: v.to(dtype) for k, v in flux_to_diffusers(state, config).items()}, strict=True, assign=True)
    return model.to(device).eval()


# ---------------------------------------------------------------------------------------------
# Autoencoder


def _diffusers_vae_config(config: FluxVAEConfig) -> dict:
    levels = len(config.block_out_channels)
    return dict(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels, block_out_channels=config.block_out_channels,
        layers_per_block=config.layers_per_block, act_fn="silu", latent_channels=config.latent_channels,
        norm_num_groups=config.norm_num_groups, scaling_factor=config.scale_factor,
        shift_factor=config.shift_factor, use_quant_conv=False, use_post_quant_conv=False,
    )


class FluxVAE(nn.Module):
    """decode: scaled FLUX latents (B, 16, H/8, W/8) -> pixels (B, 3, H, W) in about [-1, 1]."""

    def __init__(self, config: FluxVAEConfig):
        super().__init__()
        self.config = config
        self.model = AutoencoderKL(**_diffusers_vae_config(config))

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        z = latent / self.config.scale_factor + self.config.shift_factor
        return self.model.decode(z).sample


def flux_vae_key_shapes(config: FluxVAEConfig = FluxVAEConfig()) -> dict[str, tuple[int, ...]]:
    """Every key of the official FLUX autoencoder file (LDM names: encoder.down.i.block.j ...)."""
    widths, layers, z = config.block_out_channels, config.layers_per_block, config.latent_channels
    shapes: dict[str, tuple[int, ...]] = {}

    def conv(name, cout, cin, k=3):
        shapes[f"{name}.weight"], shapes[f"{name}.bias"] = (cout, cin, k, k), (cout,)

    def norm(name, c):
        shapes[f"{name}.weight"], shapes[f"{name}.bias"] = (c,), (c,)

    def resnet(name, cin, cout):
        norm(f"{name}.norm1", cin)
        conv(f"{name}.conv1", cout, cin)
        norm(f"{name}.norm2", cout)
        conv(f"{name}.conv2", cout, cout)
        if cin != cout:
            conv(f"{name}.nin_shortcut", cout, cin, 1)

    def middle(prefix, c):
        resnet(f"{prefix}.mid.block_1", c, c)
        norm(f"{prefix}.mid.attn_1.norm", c)
        for part in ("q", "k", "v", "proj_out"):
            conv(f"{prefix}.mid.attn_1.{part}", c, c, 1)
        resnet(f"{prefix}.mid.block_2", c, c)

    conv("encoder.conv_in", widths[0], 3)
    for i, width in enumerate(widths):
        for j in range(layers):
            resnet(f"encoder.down.{i}.block.{j}", widths[max(i - 1, 0)] if j == 0 else width, width)
        if i < len(widths) - 1:
            conv(f"encoder.down.{i}.downsample.conv", width, width)
    middle("encoder", widths[-1])
    norm("encoder.norm_out", widths[-1])
    conv("encoder.conv_out", 2 * z, widths[-1])
    conv("decoder.conv_in", widths[-1], z)
    middle("decoder", widths[-1])
    block_in = widths[-1]
    for i in reversed(range(len(widths))):
        for j in range(layers + 1):
            resnet(f"decoder.up.{i}.block.{j}", block_in, widths[i])
            block_in = widths[i]
        if i > 0:
            conv(f"decoder.up.{i}.upsample.conv", block_in, block_in)
    norm("decoder.norm_out", widths[0])
    conv("decoder.conv_out", 3, widths[0])
    return shapes


def flux_vae_to_diffusers(state: dict[str, torch.Tensor], config: FluxVAEConfig = FluxVAEConfig()) -> dict:
    return convert_ldm_vae_checkpoint(state, _diffusers_vae_config(config))


def load_flux_vae(path: Path, config: FluxVAEConfig = FluxVAEConfig(), dtype=torch.bfloat16, device="cpu") -> FluxVAE:
    state = load_checked(Path(path), flux_vae_key_shapes(config), "FLUX.1-dev autoencoder (LDM layout)")
    with torch.device("meta"):
        vae = FluxVAE(config)
    vae.model.load_state_dict({k: v.to(dtype) for k, v in flux_vae_to_diffusers(state, config).items()},
                              strict=True, assign=True)
    return vae.to(device).eval()


def tiny_random_flux(context_in_dim: int = 24, vec_in_dim: int = 16, seed: int = 0) -> tuple[FluxTransformer2DModel, FluxVAE]:
    """A tiny FLUX (transformer + autoencoder) with weights drawn from `seed`, for CPU tests."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        transformer = build_mmdit(tiny_flux_config(context_in_dim, vec_in_dim))
        vae = FluxVAE(TINY_FLUX_VAE)
    return transformer.eval(), vae.eval()


# ---------------------------------------------------------------------------------------------
# Sampling


@torch.no_grad()
def flux_text_to_image(
    transformer: FluxTransformer2DModel,
    vae: FluxVAE,
    t5_txt: torch.Tensor,
    clip_vec: torch.Tensor,
    height: int,
    width: int,
    num_steps: int,
    guidance: float = DISTILLED_GUIDANCE,
    seed: int = 0,
    callback=None,
) -> torch.Tensor:
    """One image (3, H, W) in [-1, 1], as the official T2I step of t2i2v (DistilledDenoiser).

    t5_txt (1, L, context_in_dim) and clip_vec (1, vec_in_dim): the prompt through the video model's
    T5 / CLIP (no FPS or motion suffix). The schedule is the official `get_schedule` with one frame,
    i.e. the Open-Sora shift (1 + (S - 256) / 1920 for S image tokens) on a linear grid; the guidance
    scale goes in through the guidance embedding, with no classifier-free guidance batch.
    `callback(step, num_steps)` is called after each step.
    """
    unit = vae.config.spatial_compression * PATCH_SIZE
    for name, value in (("height", height), ("width", width)):
        if not isinstance(value, int) or value < unit or value % unit:
            raise UserError(f"FLUX image {name} {value!r} is not allowed: use a multiple of {unit} (at least {unit})")
    if not isinstance(num_steps, int) or num_steps < 1:
        raise UserError(f"FLUX num_steps {num_steps!r} is not allowed: use 1 or more")
    param = next(transformer.parameters())
    device, dtype = param.device, param.dtype
    latent_h, latent_w = height // vae.config.spatial_compression, width // vae.config.spatial_compression
    generator = torch.Generator(device="cpu").manual_seed(seed)
    noise = torch.randn((1, vae.config.latent_channels, 1, latent_h, latent_w), generator=generator)
    img = pack(noise.to(device, dtype), PATCH_SIZE)
    img_ids = image_position_ids(1, latent_h, latent_w, PATCH_SIZE).to(device)
    txt, vec = t5_txt.to(device, dtype), clip_vec.to(device, dtype)
    sigmas = make_scheduler(num_steps, img.shape[1], 1).sigmas.tolist()
    guidance_vec = torch.full((1,), guidance, device=device, dtype=dtype)
    for i, (t_curr, t_next) in enumerate(zip(sigmas[:-1], sigmas[1:])):
        t_vec = torch.full((1,), t_curr, device=device, dtype=dtype)
        velocity = mmdit_forward(transformer, img, None, txt, vec, t_vec, img_ids, guidance=guidance_vec)
        img = img + (t_next - t_curr) * velocity
        if callback is not None:
            callback(i, num_steps)
    latent = unpack(img, PATCH_SIZE, 1, latent_h, latent_w)[:, :, 0]
    image = vae.decode(latent.to(next(vae.parameters()).dtype))
    return image[0].float().clamp(-1, 1).cpu()
