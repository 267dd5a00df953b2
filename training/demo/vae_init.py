"""Start the demo VAE as a colour-preserving block-mean autoencoder instead of from random weights.

Trained from random weights at demo width, the HunyuanVideo VAE learns shapes but washes every
object out to grey (training/demo/HISTORY.md, "VAE"). This initialisation gives it, before the
first step, an exact linear path for colour: the encoder averages RGB over each 4x8x8 latent cell
(the causal grouping: frame 0 alone, then groups of 4) into latent channels 0-2, and the decoder
copies that back with nearest upsampling. Every residual branch and attention output starts at
zero (as in Fixup / zero-init residuals), so training only has to add the detail.

The two GroupNorms on the main path (`conv_norm_out` of encoder and decoder) would normalise the
colour away. Each of their groups therefore gets a constant reference channel at `level` (8,
against signals in [-1, 1]): with it dominating the group's variance, the normalisation is close
to a fixed affine map. Carrying both +rgb and -rgb makes the group mean exactly constant and lets
the read-out cancel the offset. The SiLU after each norm is kept in its almost-linear range by
the bias `silu_bias`. Needs at least 8 channels per GroupNorm group at every width.
(A reference of 30 dominates better but its larger weights made the first steps diverge.)
"""

from __future__ import annotations

import math

import torch
from torch import nn

from opensora.errors import UserError

SIGNAL = 3  # rgb channels 0-2 carry the colour, channels 3-5 carry -rgb
LOGVAR = -6.0  # posterior log-variance of the block-mean init: a nearly deterministic latent to start from


def _zero(module: nn.Module) -> None:
    for p in module.parameters():
        nn.init.zeros_(p)


def _set_centre_tap(conv: nn.Conv3d, out_channel: int, in_channel: int, value: float) -> None:
    """The weight the causal conv gives the current frame's centre pixel (front padding kt-1)."""
    _, _, kt, kh, kw = conv.weight.shape
    with torch.no_grad():
        conv.weight[out_channel, in_channel, kt - 1, kh // 2, kw // 2] = value


def _identity_conv(conv: nn.Conv3d, channels: int) -> None:
    """Causal kxkxk conv (or 1x1x1) that copies its first `channels` inputs."""
    _zero(conv)
    for c in range(channels):
        _set_centre_tap(conv, c, c, 1.0)


def _averaging_conv(conv: nn.Conv3d, time_stride: int) -> None:
    """Strided causal conv that averages each 2x2 (x2 in time) cell per channel.

    With the causal padding (2 frames in front, 1 pixel each side), output i of a stride-2 axis
    reads inputs 2i-1, 2i, 2i+1; taps 1 and 2 are the cell {2i, 2i+1}. In time that pairs frame 0
    with its replicated pad, so frame 0 stays alone, as the causal VAE wants.
    """
    _zero(conv)
    taps_t = (1, 2) if time_stride == 2 else (2,)
    weight = 1.0 / (4 * len(taps_t))
    with torch.no_grad():
        for c in range(min(conv.in_channels, conv.out_channels)):
            for t in taps_t:
                conv.weight[c, c, t, 1:3, 1:3] = weight


def _identity_resnet(resnet: nn.Module, reference_channels: list[int], level: float) -> None:
    _zero(resnet.conv2)  # the branch adds nothing until trained
    if resnet.conv_shortcut is not None:
        conv = resnet.conv_shortcut.conv
        _identity_conv(conv, min(conv.in_channels, conv.out_channels))
        with torch.no_grad():  # channels that are new at this width get their own reference
            for c in reference_channels:
                if conv.in_channels <= c < conv.out_channels:
                    conv.bias[c] = level


def _reference_channels(block_out_channels: tuple[int, ...], groups: int) -> list[int]:
    """One channel per GroupNorm group at every width (the first group uses channel 6)."""
    refs = {2 * SIGNAL}
    for width in block_out_channels:
        size = width // groups
        refs.update(range(size, width, size))
    return sorted(refs)


def _read_out(norm: nn.GroupNorm, conv: nn.Conv3d, out_channels: int, refs: list[int], level: float,
              silu_bias: float) -> None:
    """norm -> SiLU -> conv that returns the rgb signal (channels 0-2) into outputs 0-2, up to the
    tiny curvature of SiLU around `silu_bias`."""
    group = norm.num_channels // norm.num_groups
    share = sum(c < group for c in refs) / group  # fraction of the first group held at `level`
    sigma = level * math.sqrt(share - share**2)  # that group's std when the references dominate
    gate = 1 / (1 + math.exp(-silu_bias))
    slope = gate * (1 + silu_bias * (1 - gate))  # SiLU'(silu_bias)
    scale = sigma / (2 * slope)  # +rgb and -rgb both carry the signal
    with torch.no_grad():
        nn.init.ones_(norm.weight)
        norm.bias.fill_(silu_bias)
    _zero(conv)
    for c in range(min(SIGNAL, out_channels)):
        _set_centre_tap(conv, c, c, scale)
        _set_centre_tap(conv, c, c + SIGNAL, -scale)


def _set_input(conv: nn.Conv3d, reference_channels: list[int], level: float) -> None:
    """Entry conv (pixels or latent): inputs 0-2 -> +x in channels 0-2 and -x in 3-5; references as biases."""
    _zero(conv)
    for c in range(SIGNAL):
        _set_centre_tap(conv, c, c, 1.0)
        _set_centre_tap(conv, c + SIGNAL, c, -1.0)
    with torch.no_grad():
        for c in reference_channels:
            if c < conv.out_channels:
                conv.bias[c] = level


def _zero_attention(mid_block: nn.Module) -> None:
    for attention in mid_block.attentions:
        if attention is not None:
            _zero(attention.to_out[0])


def init_block_mean_vae(model: nn.Module, level: float = 8.0, silu_bias: float = 6.0) -> None:
    """Overwrite a diffusers AutoencoderKLHunyuanVideo (3 RGB channels, time compression 4) in place."""
    config = model.config
    widths, groups = tuple(config.block_out_channels), config.norm_num_groups
    if min(widths) // groups < 2 * SIGNAL + 2:
        raise UserError(f"norm_num_groups={groups} leaves {min(widths) // groups} channels per group; "
                        f"the block-mean init needs >= {2 * SIGNAL + 2} (norm_num_groups <= "
                        f"{min(widths) // (2 * SIGNAL + 2)} at block_out_channels {list(widths)})")
    refs = _reference_channels(widths, groups)
    latent = config.latent_channels
    encoder, decoder = model.encoder, model.decoder

    _set_input(encoder.conv_in.conv, refs, level)
    for block in encoder.down_blocks:
        for resnet in block.resnets:
            _identity_resnet(resnet, refs, level)
        for down in block.downsamplers or []:
            _averaging_conv(down.conv.conv, time_stride=down.conv.conv.stride[0])
    for resnet in encoder.mid_block.resnets:
        _identity_resnet(resnet, refs, level)
    _zero_attention(encoder.mid_block)
    _read_out(encoder.conv_norm_out, encoder.conv_out.conv, latent, refs, level, silu_bias)
    with torch.no_grad():
        encoder.conv_out.conv.bias[latent:] = LOGVAR

    for conv in (model.quant_conv, model.post_quant_conv):
        _identity_conv(conv, conv.in_channels)

    # Decoder input: latent channels 0-2 are the rgb cell means; 3+ start unused (zero weights) and learn.
    _set_input(decoder.conv_in.conv, refs, level)
    for resnet in decoder.mid_block.resnets:
        _identity_resnet(resnet, refs, level)
    _zero_attention(decoder.mid_block)
    for block in decoder.up_blocks:
        for resnet in block.resnets:
            _identity_resnet(resnet, refs, level)
        for up in block.upsamplers or []:
            _identity_conv(up.conv.conv, up.conv.conv.in_channels)
    _read_out(decoder.conv_norm_out, decoder.conv_out.conv, 3, refs, level, silu_bias)
