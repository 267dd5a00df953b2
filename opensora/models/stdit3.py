"""STDiT3, the Open-Sora 1.2 video transformer, in plain torch.

Each of `depth` layers is a spatial block (attention over the tokens of one frame) followed by a
temporal block (attention over the frames of one position, with RoPE). Both use PixArt-style
"t2i" modulation from one shared timestep MLP, and a cross-attention to the T5 caption that sees
only the caption's valid tokens. Frames marked False in `x_mask` (conditioning frames) are
modulated with timestep 0 instead of t.

Module and parameter names are the official ones, so `hpcai-tech/OpenSora-STDiT-v3`'s
`model.safetensors` loads without conversion. Numbers and quirks: tests/fixtures/opensora_v1_2
(README section A, sampler_spec_v1_2.md section 8).
"""

import math
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers.models.embeddings import get_timestep_embedding
from diffusers.models.normalization import RMSNorm
from torch import nn

from opensora.configs import STDiT3Config  # noqa: F401 - the model's config lives with the presets


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


def select_frames(
    x_mask: torch.Tensor | None, frames: int, with_t: torch.Tensor, with_t0: Callable[[], torch.Tensor]
) -> torch.Tensor:
    """Per frame, `with_t` where x_mask is True, `with_t0()` where False (computed only with a
    mask); tokens are (B, T*S, C)."""
    if x_mask is None:
        return with_t
    b, n, c = with_t.shape
    keep = x_mask[:, :, None, None]
    out = torch.where(keep, with_t.view(b, frames, n // frames, c), with_t0().view(b, frames, n // frames, c))
    return out.view(b, n, c)


def sincos_embedding(positions: torch.Tensor, inv_freq: torch.Tensor) -> torch.Tensor:
    angles = positions[:, None] * inv_freq[None]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)


def position_embedding_2d(
    dim: int, rows: int, cols: int, scale: float, base_size: int, device=None
) -> torch.Tensor:
    """(1, rows*cols, dim) sin-cos table; the column coordinate fills the first half."""
    half = dim // 2
    inv_freq = 1.0 / (10000 ** (torch.arange(0, half, 2, device=device).float() / half))
    row = (torch.arange(rows, device=device) / scale) * (base_size / rows)
    col = (torch.arange(cols, device=device) / scale) * (base_size / cols)
    row, col = row.repeat_interleave(cols), col.repeat(rows)
    return torch.cat([sincos_embedding(col, inv_freq), sincos_embedding(row, inv_freq)], dim=-1)[None]


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, out: int | None = None):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, out or dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class TimestepEmbedder(nn.Module):
    """[cos, sin] of 256 frequencies -> Linear -> SiLU -> Linear (also used for fps)."""

    frequency_size = 256

    def __init__(self, hidden_size: int):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(self.frequency_size, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size)
        )

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        freq = get_timestep_embedding(t, self.frequency_size, flip_sin_to_cos=True, downscale_freq_shift=0)
        return self.mlp(freq.to(self.mlp[0].weight.dtype))


class CaptionEmbedder(nn.Module):
    """Projects T5 states to the model width; `y_embedding` is the learned null caption (CFG)."""

    def __init__(self, caption_channels: int, hidden_size: int, token_num: int):
        super().__init__()
        self.y_proj = Mlp(caption_channels, hidden_size, hidden_size)
        self.register_buffer("y_embedding", torch.randn(token_num, caption_channels) / caption_channels**0.5)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.y_proj(y)


class Rope(nn.Module):
    """Interleaved rotary embedding over the frame index (pairs (2i, 2i+1))."""

    def __init__(self, head_dim: int):
        super().__init__()
        # An nn.Parameter that is never trained: the official checkpoint stores it under `rope.freqs`.
        freqs = 1.0 / (10000 ** (torch.arange(0, head_dim, 2).float() / head_dim))
        self.freqs = nn.Parameter(freqs, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., N, D), rotated by position 0..N-1."""
        positions = torch.arange(x.shape[-2], device=x.device, dtype=self.freqs.dtype)
        angles = (positions[:, None] * self.freqs[None]).repeat_interleave(2, dim=-1)
        pairs = x.unflatten(-1, (-1, 2))
        rotated = torch.stack([-pairs[..., 1], pairs[..., 0]], dim=-1).flatten(-2)
        return (x * angles.cos() + rotated * angles.sin()).to(x.dtype)


class SelfAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qk_norm: bool):
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.q_norm = RMSNorm(head_dim, eps=1e-6) if qk_norm else nn.Identity()
        self.k_norm = RMSNorm(head_dim, eps=1e-6) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, rope: Rope | None = None) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k = self.q_norm(q).to(v.dtype), self.k_norm(k).to(v.dtype)
        if rope is not None:  # after the QK-norm, as the official temporal blocks
            q, k = rope(q), rope(k)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class CrossAttention(nn.Module):
    """Queries of item b see only the valid caption tokens of item b."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.q_linear = nn.Linear(dim, dim)
        self.kv_linear = nn.Linear(dim, dim * 2)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, y: torch.Tensor, y_valid: torch.Tensor) -> torch.Tensor:
        """x (B, N, C); y (B, L, C) projected caption; y_valid (B, L) bool."""
        b, n, c = x.shape
        heads, head_dim = self.num_heads, c // self.num_heads
        q = self.q_linear(x).view(b, n, heads, head_dim).transpose(1, 2)
        k, v = self.kv_linear(y).view(b, -1, 2, heads, head_dim).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=y_valid[:, None, None, :])
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class STDiT3Block(nn.Module):
    def __init__(self, config: STDiT3Config, temporal: bool):
        super().__init__()
        dim = config.hidden_size
        self.temporal = temporal
        self.norm1 = nn.LayerNorm(dim, eps=1e-6, elementwise_affine=False)
        self.attn = SelfAttention(dim, config.num_heads, config.qk_norm)
        self.cross_attn = CrossAttention(dim, config.num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6, elementwise_affine=False)
        self.mlp = Mlp(dim, int(dim * config.mlp_ratio))
        self.scale_shift_table = nn.Parameter(torch.randn(6, dim) / dim**0.5)

    def _attend(self, x: torch.Tensor, frames: int, rope: Rope | None) -> torch.Tensor:
        b, n, c = x.shape
        x = x.view(b, frames, n // frames, c)
        if self.temporal:  # sequences over T per spatial position
            out = self.attn(x.transpose(1, 2).reshape(-1, frames, c), rope)
            return out.view(b, n // frames, frames, c).transpose(1, 2).reshape(b, n, c)
        return self.attn(x.reshape(b * frames, n // frames, c)).view(b, n, c)

    def forward(self, x, y, y_valid, t_mlp, t0_mlp, x_mask, frames: int, rope: Rope | None) -> torch.Tensor:
        b = x.shape[0]
        mod = (self.scale_shift_table[None] + t_mlp.view(b, 6, -1)).chunk(6, dim=1)
        mod0 = mod if x_mask is None else (self.scale_shift_table[None] + t0_mlp.view(b, 6, -1)).chunk(6, dim=1)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod
        shift_msa0, scale_msa0, gate_msa0, shift_mlp0, scale_mlp0, gate_mlp0 = mod0

        normed = self.norm1(x)
        h = select_frames(
            x_mask, frames, modulate(normed, shift_msa, scale_msa), lambda: modulate(normed, shift_msa0, scale_msa0)
        )
        h = self._attend(h, frames, rope)
        x = x + select_frames(x_mask, frames, gate_msa * h, lambda: gate_msa0 * h)

        x = x + self.cross_attn(x, y, y_valid)

        normed = self.norm2(x)
        h = select_frames(
            x_mask, frames, modulate(normed, shift_mlp, scale_mlp), lambda: modulate(normed, shift_mlp0, scale_mlp0)
        )
        h = self.mlp(h)
        return x + select_frames(x_mask, frames, gate_mlp * h, lambda: gate_mlp0 * h)


class FinalLayer(nn.Module):
    def __init__(self, config: STDiT3Config):
        super().__init__()
        dim = config.hidden_size
        self.norm_final = nn.LayerNorm(dim, eps=1e-6, elementwise_affine=False)
        self.linear = nn.Linear(dim, math.prod(config.patch_size) * config.out_channels)
        self.scale_shift_table = nn.Parameter(torch.randn(2, dim) / dim**0.5)

    def forward(self, x, t, t0, x_mask, frames: int) -> torch.Tensor:
        shift, scale = (self.scale_shift_table[None] + t[:, None]).chunk(2, dim=1)
        x_t = modulate(self.norm_final(x), shift, scale)
        if x_mask is not None:
            # Official quirk: conditioning frames re-normalise the already modulated x_t, not x.
            shift0, scale0 = (self.scale_shift_table[None] + t0[:, None]).chunk(2, dim=1)
            x_t = select_frames(x_mask, frames, x_t, lambda: modulate(self.norm_final(x_t), shift0, scale0))
        return self.linear(x_t)


class STDiT3(nn.Module):
    def __init__(self, config: STDiT3Config):
        super().__init__()
        self.config = config
        dim = config.hidden_size
        self.rope = Rope(config.head_dim)
        self.x_embedder = nn.Module()
        self.x_embedder.proj = nn.Conv3d(config.in_channels, dim, kernel_size=config.patch_size, stride=config.patch_size)
        self.t_embedder = TimestepEmbedder(dim)
        self.fps_embedder = TimestepEmbedder(dim)
        self.t_block = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        self.y_embedder = CaptionEmbedder(config.caption_channels, dim, config.model_max_length)
        self.spatial_blocks = nn.ModuleList(STDiT3Block(config, temporal=False) for _ in range(config.depth))
        self.temporal_blocks = nn.ModuleList(STDiT3Block(config, temporal=True) for _ in range(config.depth))
        self.final_layer = FinalLayer(config)

    def null_caption(self, batch: int) -> torch.Tensor:
        """(batch, 1, L, caption_channels): the learned null caption, the CFG unconditional text."""
        return self.y_embedder.y_embedding[None, None].expand(batch, 1, -1, -1)

    def _patchify(self, x: torch.Tensor) -> torch.Tensor:
        pads = [(-size) % p for size, p in zip(x.shape[2:], self.config.patch_size)]
        x = F.pad(x, (0, pads[2], 0, pads[1], 0, pads[0]))
        return self.x_embedder.proj(x).flatten(2).transpose(1, 2)  # (B, T*H*W tokens, C), (t, h, w) order

    def _unpatchify(self, x: torch.Tensor, grid: tuple[int, int, int], size: tuple[int, int, int]) -> torch.Tensor:
        (nt, nh, nw), (pt, ph, pw) = grid, self.config.patch_size
        b = x.shape[0]
        x = x.view(b, nt, nh, nw, pt, ph, pw, self.config.out_channels)
        x = x.permute(0, 7, 1, 4, 2, 5, 3, 6).reshape(b, -1, nt * pt, nh * ph, nw * pw)
        return x[:, :, : size[0], : size[1], : size[2]]

    def forward(
        self,
        x: torch.Tensor,
        timestep: torch.Tensor,
        y: torch.Tensor,
        mask: torch.Tensor | None = None,
        x_mask: torch.Tensor | None = None,
        *,
        fps: torch.Tensor,
        height: torch.Tensor,
        width: torch.Tensor,
    ) -> torch.Tensor:
        """The official call.

        x (B, C_in, T, H, W) latent; timestep (B,) on the 0..1000 scale; y (B, 1, L, caption_channels)
        caption states; mask (B', L) text mask (1 = valid; B' may divide B, it is repeated, as the CFG
        batch uses the prompt masks for the null half); x_mask (B, T) bool, False = conditioning frame;
        fps (B',) ; height/width (B',) pixels (only height[0]*width[0] is used: position-embedding scale).
        Returns (B, out_channels, T, H, W); channels [:C_in] are the velocity.
        """
        cfg = self.config
        dtype = self.x_embedder.proj.weight.dtype
        b = x.shape[0]
        x, timestep, y = x.to(dtype), timestep.to(dtype), y.to(dtype)
        size = tuple(x.shape[2:])
        grid = tuple(-(-s // p) for s, p in zip(size, cfg.patch_size))
        frames, tokens_per_frame = grid[0], grid[1] * grid[2]

        scale = math.sqrt(height[0].item() * width[0].item()) / cfg.input_sq_size
        base_size = round(tokens_per_frame**0.5)
        pos = position_embedding_2d(cfg.hidden_size, grid[1], grid[2], scale, base_size, x.device).to(dtype)

        fps = fps.reshape(-1)
        fps_emb = self.fps_embedder(fps.repeat(b // fps.shape[0]))
        t = self.t_embedder(timestep) + fps_emb
        t_mlp = self.t_block(t)
        t0 = t0_mlp = None
        if x_mask is not None:
            t0 = self.t_embedder(torch.zeros_like(timestep)) + fps_emb
            t0_mlp = self.t_block(t0)

        y = self.y_embedder(y).squeeze(1)  # (B, L, C)
        if mask is None:
            y_valid = torch.ones(y.shape[:2], dtype=torch.bool, device=y.device)
        else:
            y_valid = (mask != 0).repeat(b // mask.shape[0], 1)

        h = self._patchify(x)
        h = (h.view(b, frames, tokens_per_frame, -1) + pos).view(b, frames * tokens_per_frame, -1)
        for spatial, temporal in zip(self.spatial_blocks, self.temporal_blocks):
            h = spatial(h, y, y_valid, t_mlp, t0_mlp, x_mask, frames, None)
            h = temporal(h, y, y_valid, t_mlp, t0_mlp, x_mask, frames, self.rope)
        h = self.final_layer(h, t, t0, x_mask, frames)
        return self._unpatchify(h, grid, size).float()


def build_stdit3(config: STDiT3Config) -> STDiT3:
    """Instantiate (on the current default device, e.g. inside `torch.device("meta")`)."""
    return STDiT3(config)


def official_key_shapes(config: STDiT3Config) -> dict[str, tuple[int, ...]]:
    """Every state-dict key and shape of the official STDiT3 for `config` (nothing allocated)."""
    with torch.device("meta"):
        model = build_stdit3(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def load_stdit3(path: Path, config: STDiT3Config, dtype=torch.float32, device="cpu") -> STDiT3:
    """The official `model.safetensors` (key layout unchanged), every key checked first."""
    # Imported here: opensora.checkpoints imports the presets, which import the model configs.
    from opensora.checkpoints import load_checked

    state = load_checked(Path(path), official_key_shapes(config), "STDiT3 weights")
    with torch.device("meta"):
        model = build_stdit3(config)
    model.load_state_dict(state, strict=True, assign=True)
    return model.to(device=device, dtype=dtype).eval()
