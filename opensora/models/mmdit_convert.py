"""Official Open-Sora 2.0 MMDiT state dict <-> diffusers `FluxTransformer2DModel` state dict.

The mapping (verified against the official code's outputs, see tests/fixtures/DIFFUSERS_MAPPING.md):
- `img_in` and `cond_in` become one input projection over `[img, cond]` (weights concatenated on
  the input dim, biases summed).
- Single blocks split `v_mlp` into the value projection and the MLP input.
- The final layer's adaLN output halves swap: official (shift, scale), diffusers (scale, shift).
- With rotate-half RoPE (the official v2 setting) the q/k rows of every head, their biases and the
  q/k RMSNorm scales are permuted so diffusers' interleaved RoPE computes the same function.
"""

import torch

from opensora.models.mmdit import MMDiTConfig

ROPE_PERMUTED = ("q_proj", "k_proj", "query_norm", "key_norm")


def rotate_half_to_interleaved(head_dim: int) -> torch.Tensor:
    """Row order that puts rotate-half pair (j, j + D/2) at interleaved positions (2j, 2j + 1)."""
    half = torch.arange(head_dim // 2)
    return torch.stack([half, half + head_dim // 2], dim=-1).flatten()


def _permute_heads(tensor: torch.Tensor, order: torch.Tensor, head_dim: int) -> torch.Tensor:
    rows = tensor.shape[0]
    grouped = tensor.reshape(rows // head_dim, head_dim, *tensor.shape[1:])
    return grouped[:, order].reshape(tensor.shape)


def _double_block_names(i: int) -> list[tuple[str, str]]:
    """(official, diffusers) prefixes of one double-stream block; weight/bias/scale suffixes follow."""
    o, d = f"double_blocks.{i}", f"transformer_blocks.{i}"
    return [
        (f"{o}.img_mod.lin", f"{d}.norm1.linear"),
        (f"{o}.txt_mod.lin", f"{d}.norm1_context.linear"),
        (f"{o}.img_attn.q_proj", f"{d}.attn.to_q"),
        (f"{o}.img_attn.k_proj", f"{d}.attn.to_k"),
        (f"{o}.img_attn.v_proj", f"{d}.attn.to_v"),
        (f"{o}.txt_attn.q_proj", f"{d}.attn.add_q_proj"),
        (f"{o}.txt_attn.k_proj", f"{d}.attn.add_k_proj"),
        (f"{o}.txt_attn.v_proj", f"{d}.attn.add_v_proj"),
        (f"{o}.img_attn.norm.query_norm", f"{d}.attn.norm_q"),
        (f"{o}.img_attn.norm.key_norm", f"{d}.attn.norm_k"),
        (f"{o}.txt_attn.norm.query_norm", f"{d}.attn.norm_added_q"),
        (f"{o}.txt_attn.norm.key_norm", f"{d}.attn.norm_added_k"),
        (f"{o}.img_attn.proj", f"{d}.attn.to_out.0"),
        (f"{o}.txt_attn.proj", f"{d}.attn.to_add_out"),
        (f"{o}.img_mlp.0", f"{d}.ff.net.0.proj"),
        (f"{o}.img_mlp.2", f"{d}.ff.net.2"),
        (f"{o}.txt_mlp.0", f"{d}.ff_context.net.0.proj"),
        (f"{o}.txt_mlp.2", f"{d}.ff_context.net.2"),
    ]


def _single_block_names(i: int) -> list[tuple[str, str]]:
    o, d = f"single_blocks.{i}", f"single_transformer_blocks.{i}"
    return [
        (f"{o}.q_proj", f"{d}.attn.to_q"),
        (f"{o}.k_proj", f"{d}.attn.to_k"),
        (f"{o}.norm.query_norm", f"{d}.attn.norm_q"),
        (f"{o}.norm.key_norm", f"{d}.attn.norm_k"),
        (f"{o}.linear2", f"{d}.proj_out"),
        (f"{o}.modulation.lin", f"{d}.norm.linear"),
    ]


def _one_to_one_names(config: MMDiTConfig) -> list[tuple[str, str]]:
    names = [
        ("txt_in", "context_embedder"),
        ("time_in.in_layer", "time_text_embed.timestep_embedder.linear_1"),
        ("time_in.out_layer", "time_text_embed.timestep_embedder.linear_2"),
        ("vector_in.in_layer", "time_text_embed.text_embedder.linear_1"),
        ("vector_in.out_layer", "time_text_embed.text_embedder.linear_2"),
        ("final_layer.linear", "proj_out"),
    ]
    if config.guidance_embed:
        names += [
            ("guidance_in.in_layer", "time_text_embed.guidance_embedder.linear_1"),
            ("guidance_in.out_layer", "time_text_embed.guidance_embedder.linear_2"),
        ]
    for i in range(config.depth):
        names += _double_block_names(i)
    for i in range(config.depth_single_blocks):
        names += _single_block_names(i)
    return names


def _suffixes(official_prefix: str) -> tuple[tuple[str, str], ...]:
    if official_prefix.endswith(("query_norm", "key_norm")):
        return (("scale", "weight"),)
    return (("weight", "weight"), ("bias", "bias"))


def _swap_halves(tensor: torch.Tensor) -> torch.Tensor:
    first, second = tensor.chunk(2, dim=0)
    return torch.cat([second, first], dim=0)


def official_to_diffusers(state: dict[str, torch.Tensor], config: MMDiTConfig) -> dict[str, torch.Tensor]:
    """Convert an official state dict (all keys present, checked by the caller) to diffusers names."""
    hidden, head_dim = config.hidden_size, config.head_dim
    order = rotate_half_to_interleaved(head_dim) if config.rope == "rotate_half" else None
    out: dict[str, torch.Tensor] = {}
    for official, diffusers in _one_to_one_names(config):
        for o_suffix, d_suffix in _suffixes(official):
            tensor = state[f"{official}.{o_suffix}"]
            if order is not None and official.rsplit(".", 1)[-1] in ROPE_PERMUTED:
                tensor = _permute_heads(tensor, order, head_dim)
            out[f"{diffusers}.{d_suffix}"] = tensor
    for i in range(config.depth_single_blocks):
        v_mlp_w, v_mlp_b = state[f"single_blocks.{i}.v_mlp.weight"], state[f"single_blocks.{i}.v_mlp.bias"]
        out[f"single_transformer_blocks.{i}.attn.to_v.weight"] = v_mlp_w[:hidden]
        out[f"single_transformer_blocks.{i}.attn.to_v.bias"] = v_mlp_b[:hidden]
        out[f"single_transformer_blocks.{i}.proj_mlp.weight"] = v_mlp_w[hidden:]
        out[f"single_transformer_blocks.{i}.proj_mlp.bias"] = v_mlp_b[hidden:]
    if config.cond_embed:
        out["x_embedder.weight"] = torch.cat([state["img_in.weight"], state["cond_in.weight"]], dim=1)
        out["x_embedder.bias"] = state["img_in.bias"] + state["cond_in.bias"]
    else:
        out["x_embedder.weight"], out["x_embedder.bias"] = state["img_in.weight"], state["img_in.bias"]
    out["norm_out.linear.weight"] = _swap_halves(state["final_layer.adaLN_modulation.1.weight"])
    out["norm_out.linear.bias"] = _swap_halves(state["final_layer.adaLN_modulation.1.bias"])
    return out


def diffusers_to_official(state: dict[str, torch.Tensor], config: MMDiTConfig) -> dict[str, torch.Tensor]:
    """Inverse of `official_to_diffusers`, used to save fine-tuned weights in the official layout.

    The merged input bias goes to `img_in.bias` and `cond_in.bias` is zero: the same function.
    """
    head_dim = config.head_dim
    inverse = None
    if config.rope == "rotate_half":
        inverse = torch.argsort(rotate_half_to_interleaved(head_dim))
    out: dict[str, torch.Tensor] = {}
    for official, diffusers in _one_to_one_names(config):
        for o_suffix, d_suffix in _suffixes(official):
            tensor = state[f"{diffusers}.{d_suffix}"]
            if inverse is not None and official.rsplit(".", 1)[-1] in ROPE_PERMUTED:
                tensor = _permute_heads(tensor, inverse, head_dim)
            out[f"{official}.{o_suffix}"] = tensor
    for i in range(config.depth_single_blocks):
        d = f"single_transformer_blocks.{i}"
        out[f"single_blocks.{i}.v_mlp.weight"] = torch.cat([state[f"{d}.attn.to_v.weight"], state[f"{d}.proj_mlp.weight"]])
        out[f"single_blocks.{i}.v_mlp.bias"] = torch.cat([state[f"{d}.attn.to_v.bias"], state[f"{d}.proj_mlp.bias"]])
    weight, bias = state["x_embedder.weight"], state["x_embedder.bias"]
    out["img_in.weight"], out["img_in.bias"] = weight[:, : config.in_channels], bias
    if config.cond_embed:
        out["cond_in.weight"] = weight[:, config.in_channels :]
        out["cond_in.bias"] = torch.zeros_like(bias)
    out["final_layer.adaLN_modulation.1.weight"] = _swap_halves(state["norm_out.linear.weight"])
    out["final_layer.adaLN_modulation.1.bias"] = _swap_halves(state["norm_out.linear.bias"])
    return out


def official_key_shapes(config: MMDiTConfig) -> dict[str, tuple[int, ...]]:
    """Every official key and its shape, derived from the diffusers model built on the meta device."""
    from opensora.models.mmdit import build_mmdit

    with torch.device("meta"):
        model = build_mmdit(config)
    official = diffusers_to_official(model.state_dict(), config)
    return {name: tuple(tensor.shape) for name, tensor in official.items()}
