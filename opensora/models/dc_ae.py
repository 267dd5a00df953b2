"""The Video DC-AE of Open-Sora 2.0's high-compression model (`dc-ae-f32t4c128`).

4x temporal, 32x spatial compression to 128 channels, non-causal. diffusers only has the 2D
`AutoencoderDC`, so this is the 3D network written out, with module names chosen so that its
state-dict keys are the official ones (`F32T4C128_AE.safetensors` loads unchanged):

- encoder: `project_in` conv; six stages, ResBlocks in 0-2 and EfficientViT blocks (multi-scale
  ReLU linear attention + GLU MBConv) in 3-5, every stage but the last ending in a stride-2 conv
  (stride 2 in time too in stages 3 and 4) with a pixel-unshuffle + channel-average shortcut;
  `project_out` conv with a channel-average shortcut.
- decoder: the mirror image: `project_in` conv with a channel-duplicate shortcut; stages from the
  deepest up, each but the deepest opening with nearest upsampling + conv and a channel-duplicate
  + pixel-shuffle shortcut; RMSNorm, ReLU, conv out.

Every conv is 3D with zero "same" padding (non-causal); RMSNorm is over channels, eps 1e-5, with a
bias. `VideoDCAE` adds what the official inference does around the network: the optional latent
scaling, one sample at a time, and temporal + spatial tiling with cross-faded overlaps.
"""

from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers.models.normalization import RMSNorm
from torch import nn

from opensora.configs import DC_AE_ATTENTION_HEAD_DIM as ATTENTION_HEAD_DIM
from opensora.configs import DCAEConfig  # noqa: F401 - the model's config lives with the presets

ATTENTION_EPS = 1e-15
GLU_EXPAND_RATIO = 4


# ---------------------------------------------------------------------------------------------
# Layers. Attribute names are the official ones: they are the checkpoint's key names.


class ChannelRMSNorm(RMSNorm):
    """diffusers' RMSNorm (with bias) over the channel dim of a (B, C, T, H, W) tensor."""

    def __init__(self, channels: int):
        super().__init__(channels, eps=1e-5, elementwise_affine=True, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.movedim(1, -1)).movedim(-1, 1)


class ConvLayer(nn.Module):
    """3D conv with zero "same" padding, then an optional RMSNorm and activation."""

    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, groups=1, bias=True, norm=False, act=None):
        super().__init__()
        self.conv = nn.Conv3d(
            in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, groups=groups, bias=bias
        )
        self.norm = ChannelRMSNorm(out_channels) if norm else None
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.norm is not None:
            x = self.norm(x)
        return x if self.act is None else self.act(x)


class Chain(nn.Module):
    """Modules applied in order (the official `OpSequential`)."""

    def __init__(self, ops: list[nn.Module]):
        super().__init__()
        self.op_list = nn.ModuleList(ops)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for op in self.op_list:
            x = op(x)
        return x


class Residual(nn.Module):
    """main(x) + shortcut(x); the shortcuts hold no weights."""

    def __init__(self, main: nn.Module, shortcut: nn.Module | None = None):
        super().__init__()
        self.main = main
        self.shortcut = shortcut or nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x) + self.shortcut(x)


def space_to_channels(x: torch.Tensor, factor: int, temporal: bool) -> torch.Tensor:
    """Pixel unshuffle of (B, C, T, H, W); new channel = c * f^k + (dt *) dh * f + dw."""
    b, c, t, h, w = x.shape
    f, ft = factor, factor if temporal else 1
    x = x.reshape(b, c, t // ft, ft, h // f, f, w // f, f).permute(0, 1, 3, 5, 7, 2, 4, 6)
    return x.reshape(b, c * ft * f * f, t // ft, h // f, w // f)


def channels_to_space(x: torch.Tensor, factor: int, temporal: bool) -> torch.Tensor:
    """Inverse of `space_to_channels` (pixel shuffle)."""
    b, c, t, h, w = x.shape
    f, ft = factor, factor if temporal else 1
    out = c // (ft * f * f)
    x = x.reshape(b, out, ft, f, f, t, h, w).permute(0, 1, 5, 2, 6, 3, 7, 4)
    return x.reshape(b, out, t * ft, h * f, w * f)


class ChannelAveragingShortcut(nn.Module):
    """Downsampling shortcut: pixel unshuffle, then average groups of neighbouring channels."""

    def __init__(self, in_channels: int, out_channels: int, factor: int, temporal: bool = False):
        super().__init__()
        self.out_channels, self.factor, self.temporal = out_channels, factor, temporal

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        temporal = self.temporal and x.shape[2] != 1  # a single frame is only downsampled in space
        x = space_to_channels(x, self.factor, temporal)
        b, c, t, h, w = x.shape
        return x.reshape(b, self.out_channels, c // self.out_channels, t, h, w).mean(dim=2)


class ChannelDuplicatingShortcut(nn.Module):
    """Upsampling shortcut: repeat every channel, then pixel shuffle."""

    def __init__(self, in_channels: int, out_channels: int, factor: int, temporal: bool = False):
        super().__init__()
        self.in_channels, self.out_channels, self.factor, self.temporal = in_channels, out_channels, factor, temporal

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        temporal = self.temporal and x.shape[2] != 1
        volume = self.factor ** (3 if temporal else 2)
        x = x.repeat_interleave(self.out_channels * volume // self.in_channels, dim=1)
        return channels_to_space(x, self.factor, temporal)


class InterpolateConv(nn.Module):
    """Nearest upsampling by 2 (in time too when `temporal` and T > 1), then a conv."""

    def __init__(self, in_channels: int, out_channels: int, temporal: bool):
        super().__init__()
        self.temporal = temporal
        self.conv = ConvLayer(in_channels, out_channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = (2 if self.temporal and x.shape[2] != 1 else 1, 2, 2)
        return self.conv(F.interpolate(x, scale_factor=scale, mode="nearest"))


class ResBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = ConvLayer(channels, channels, 3, act=nn.SiLU())
        self.conv2 = ConvLayer(channels, channels, 3, bias=False, norm=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


class MultiScaleLinearAttention(nn.Module):
    """The official LiteMLA: q/k/v from a 1x1 conv, plus a 5x5x5 depthwise-aggregated copy, as heads
    of ReLU linear attention over all T*H*W positions."""

    def __init__(self, channels: int, scales: tuple[int, ...] = (5,)):
        super().__init__()
        heads = channels // ATTENTION_HEAD_DIM
        inner = heads * ATTENTION_HEAD_DIM
        self.qkv = ConvLayer(channels, 3 * inner, 1, bias=False)
        self.aggreg = nn.ModuleList(
            nn.Sequential(
                nn.Conv3d(3 * inner, 3 * inner, s, padding=s // 2, groups=3 * inner, bias=False),
                nn.Conv3d(3 * inner, 3 * inner, 1, groups=3 * heads, bias=False),
            )
            for s in scales
        )
        self.proj = ConvLayer(inner * (1 + len(scales)), channels, 1, bias=False, norm=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qkv = self.qkv(x)
        qkv = torch.cat([qkv] + [aggregate(qkv) for aggregate in self.aggreg], dim=1)
        b, _, t, h, w = qkv.shape
        d = ATTENTION_HEAD_DIM
        # float32 for the sums over all positions (the official code upcasts fp16 only).
        q, k, v = qkv.float().reshape(b, -1, 3 * d, t * h * w).split(d, dim=2)
        q, k = F.relu(q), F.relu(k)
        v = F.pad(v, (0, 0, 0, 1), value=1.0)  # a row of ones gives the normaliser in the same matmul
        out = (v @ k.transpose(-1, -2)) @ q
        out = out[:, :, :-1] / (out[:, :, -1:] + ATTENTION_EPS)
        return self.proj(out.reshape(b, -1, t, h, w).to(x.dtype))


class GLUMBConv(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        mid = channels * GLU_EXPAND_RATIO
        self.inverted_conv = ConvLayer(channels, 2 * mid, 1, act=nn.SiLU())
        self.depth_conv = ConvLayer(2 * mid, 2 * mid, 3, groups=2 * mid)
        self.point_conv = ConvLayer(mid, channels, 1, bias=False, norm=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, gate = self.depth_conv(self.inverted_conv(x)).chunk(2, dim=1)
        return self.point_conv(x * F.silu(gate))


class EfficientViTBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.context_module = Residual(MultiScaleLinearAttention(channels))
        self.local_module = Residual(GLUMBConv(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.local_module(self.context_module(x))


def _block(block_type: str, channels: int) -> nn.Module:
    return Residual(ResBlock(channels)) if block_type == "ResBlock" else EfficientViTBlock(channels)


class Encoder(nn.Module):
    def __init__(self, config: DCAEConfig):
        super().__init__()
        widths = config.width_list
        self.project_in = ConvLayer(config.in_channels, widths[0], 3)
        stages = []
        for i, (width, depth) in enumerate(zip(widths, config.encoder_depth_list)):
            ops = [_block(config.block_type[i], width) for _ in range(depth)]
            if i < len(widths) - 1:
                temporal = config.temporal_downsample[i]
                ops.append(Residual(
                    ConvLayer(width, widths[i + 1], 3, stride=(2 if temporal else 1, 2, 2)),
                    ChannelAveragingShortcut(width, widths[i + 1], 2, temporal),
                ))
            stages.append(Chain(ops))
        self.stages = nn.ModuleList(stages)
        self.project_out = Residual(
            Chain([ConvLayer(widths[-1], config.latent_channels, 3)]),
            ChannelAveragingShortcut(widths[-1], config.latent_channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.project_in(x)
        for stage in self.stages:
            x = stage(x)
        return self.project_out(x)


class Decoder(nn.Module):
    def __init__(self, config: DCAEConfig):
        super().__init__()
        widths = config.width_list
        self.project_in = Residual(
            ConvLayer(config.latent_channels, widths[-1], 3),
            ChannelDuplicatingShortcut(config.latent_channels, widths[-1], 1),
        )
        stages = []
        for i, (width, depth) in enumerate(zip(widths, config.decoder_depth_list)):
            ops = []
            if i < len(widths) - 1:
                temporal = config.temporal_downsample[i]  # the decoder upsamples where the encoder downsampled
                ops.append(Residual(
                    InterpolateConv(widths[i + 1], width, temporal),
                    ChannelDuplicatingShortcut(widths[i + 1], width, 2, temporal),
                ))
            ops += [_block(config.block_type[i], width) for _ in range(depth)]
            stages.append(Chain(ops))
        self.stages = nn.ModuleList(stages)
        self.project_out = Chain([ChannelRMSNorm(widths[0]), nn.ReLU(), ConvLayer(widths[0], config.in_channels, 3)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.project_in(x)
        for stage in reversed(self.stages):  # deepest stage first
            x = stage(x)
        return self.project_out(x)


# ---------------------------------------------------------------------------------------------
# Tiling, as the official DCAE: tiles are cut with a stride of (1 - overlap) tiles, each tile's
# first entries are cross-faded *in place* with the end of the previous (already faded) tile, and
# every tile but the overlap is kept.


def _cross_fade(previous: torch.Tensor, tile: torch.Tensor, extent: int, dim: int) -> None:
    extent = min(previous.shape[dim], tile.shape[dim], extent)
    for i in range(extent):
        weight = i / extent
        tile.select(dim, i).copy_(previous.select(dim, i - extent) * (1 - weight) + tile.select(dim, i) * weight)


def _tiled_in_space(x: torch.Tensor, fn, in_tile: int, out_tile: int, overlap: float) -> torch.Tensor:
    stride, extent = int(in_tile * (1 - overlap)), int(out_tile * overlap)
    keep = out_tile - extent
    rows = [
        [fn(x[..., i : i + in_tile, j : j + in_tile]) for j in range(0, x.shape[-1], stride)]
        for i in range(0, x.shape[-2], stride)
    ]
    kept_rows = []
    for i, row in enumerate(rows):
        for j, tile in enumerate(row):
            if i > 0:
                _cross_fade(rows[i - 1][j], tile, extent, dim=-2)
            if j > 0:
                _cross_fade(row[j - 1], tile, extent, dim=-1)
        kept_rows.append(torch.cat([tile[..., :keep, :keep] for tile in row], dim=-1))
    return torch.cat(kept_rows, dim=-2)


def _tiled_in_time(x: torch.Tensor, fn, in_tile: int, out_tile: int, overlap: float) -> torch.Tensor:
    stride, extent = int(in_tile * (1 - overlap)), int(out_tile * overlap)
    tiles = [fn(x[:, :, i : i + in_tile]) for i in range(0, x.shape[2], stride)]
    for i in range(1, len(tiles)):
        _cross_fade(tiles[i - 1], tiles[i], extent, dim=2)
    return torch.cat([tile[:, :, : out_tile - extent] for tile in tiles], dim=2)


class VideoDCAE(nn.Module):
    """encode: pixels (B,3,T,H,W) in [-1,1] -> latents (B,128,T/4,H/32,W/32); decode: the inverse.

    Same interface as `HunyuanVAE`. The DC-AE is deterministic: `sample` and `generator` are accepted
    and ignored. encode takes T = 1 or a multiple of 4 and H, W multiples of 32 (UserError otherwise);
    decode gives 4 frames per latent frame (1 for a single latent frame).
    """

    def __init__(self, config: DCAEConfig):
        super().__init__()
        self.config = replace(config)  # own copy: set_tiling must not change the preset's config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)

    def set_tiling(self, spatial: bool, temporal: bool, spatial_tile_size: int | None = None,
                   temporal_tile_size: int | None = None) -> None:
        """Switch tiling on/off; tile sizes in pixels / frames (the official 256 / 32 by default)."""
        c = self.config
        self.config = replace(
            c, spatial_tiling=spatial, temporal_tiling=temporal,
            spatial_tile_size=spatial_tile_size or c.spatial_tile_size,
            temporal_tile_size=temporal_tile_size or c.temporal_tile_size,
        )

    def _encode_tile(self, x: torch.Tensor) -> torch.Tensor:
        z = torch.cat([self.encoder(x[i : i + 1]) for i in range(x.shape[0])])  # one sample at a time
        return z if self.config.scaling_factor is None else z / self.config.scaling_factor

    def _decode_tile(self, z: torch.Tensor) -> torch.Tensor:
        if self.config.scaling_factor is not None:
            z = z * self.config.scaling_factor
        return torch.cat([self.decoder(z[i : i + 1]) for i in range(z.shape[0])])

    def _encode_frames(self, x: torch.Tensor) -> torch.Tensor:
        c = self.config
        if c.spatial_tiling and max(x.shape[-2:]) > c.spatial_tile_size:
            return _tiled_in_space(x, self._encode_tile, c.spatial_tile_size, c.spatial_tile_latent_size, c.tile_overlap_factor)
        return self._encode_tile(x)

    def _decode_frames(self, z: torch.Tensor) -> torch.Tensor:
        c = self.config
        if c.spatial_tiling and max(z.shape[-2:]) > c.spatial_tile_latent_size:
            return _tiled_in_space(z, self._decode_tile, c.spatial_tile_latent_size, c.spatial_tile_size, c.tile_overlap_factor)
        return self._decode_tile(z)

    def encode(self, video: torch.Tensor, sample: bool = True, generator: torch.Generator | None = None) -> torch.Tensor:
        c = self.config
        c.check_frames(video.shape[2])
        c.check_size(video.shape[-2], video.shape[-1])
        if c.temporal_tiling and video.shape[2] > c.temporal_tile_size:
            return _tiled_in_time(video, self._encode_frames, c.temporal_tile_size, c.temporal_tile_latent_size, c.tile_overlap_factor)
        return self._encode_frames(video)

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        c = self.config
        if c.temporal_tiling and latent.shape[2] > c.temporal_tile_latent_size:
            return _tiled_in_time(latent, self._decode_frames, c.temporal_tile_latent_size, c.temporal_tile_size, c.tile_overlap_factor)
        return self._decode_frames(latent)


def dc_ae_key_shapes(config: DCAEConfig) -> dict[str, tuple[int, ...]]:
    """Every official key and its shape (the model built on the meta device)."""
    with torch.device("meta"):
        model = VideoDCAE(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def load_dc_ae(path: Path, config: DCAEConfig, dtype: torch.dtype = torch.float32, device="cpu") -> VideoDCAE:
    """The official checkpoint (e.g. F32T4C128_AE.safetensors), every key checked and consumed."""
    from opensora.checkpoints import load_checked

    state = load_checked(Path(path), dc_ae_key_shapes(config), "Video DC-AE (dc-ae-f32t4c128 layout)")
    with torch.device("meta"):
        model = VideoDCAE(config)
    model.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=True, assign=True)
    return model.to(device).eval()
