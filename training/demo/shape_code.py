"""Shape codes: demo-VAE latent channels that say which shape covers each latent cell.

The demo MMDiT learns a colour word fast: a colour moves every latent of the object. A shape
only moves the few cells at its corners, and after 23 runs the MMDiT still drew the same round
blob for "square", "circle" and "triangle" (training/demo/HISTORY.md). With `--shape-code-weight` the
VAE trainer makes the encoder write the object's shape into the last three latent channels, one
per shape in `SHAPES` order, as the object's coverage of the cell times `SHAPE_CODE_AMPLITUDE`.
A shape then changes the object's latents as much as a colour does. Measured (training/demo/HISTORY.md,
"A shape code in the latent"): from the block-mean start the encoder learns the code in about
1000 steps, and an MMDiT trained on such latents writes the caption's code; the decoder does not
yet draw the outline the code names.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from training.demo.shapes_world import SHAPES

SHAPE_CODE_AMPLITUDE = 1.5  # in the MMDiT's units (latents x scale_factor, about unit variance)


def latent_coverage(coverage: torch.Tensor, time_compression: int, spatial_compression: int) -> torch.Tensor:
    """(B, T, H, W) pixel coverage -> (B, T', H/s, W/s) mean coverage of each latent cell.

    Causal like the VAE: latent frame 0 is frame 0 alone, each later one the next group of frames.
    """
    first = coverage[:, :1]
    rest = coverage[:, 1:]
    if rest.shape[1]:
        rest = rest.unflatten(1, (-1, time_compression)).mean(dim=2)
        first = torch.cat([first, rest], dim=1)
    return F.avg_pool2d(first, spatial_compression)


def shape_code_target(coverage: torch.Tensor, shapes: list[str], time_compression: int,
                      spatial_compression: int) -> torch.Tensor:
    """(B, len(SHAPES), T', h, w): channel k is the latent coverage where the object is SHAPES[k]."""
    cells = latent_coverage(coverage, time_compression, spatial_compression) * SHAPE_CODE_AMPLITUDE
    onehot = torch.tensor([[float(shape == name) for name in SHAPES] for shape in shapes], dtype=cells.dtype)
    return onehot[:, :, None, None, None] * cells[:, None]


def shape_code_channels(latent_channels: int) -> slice:
    """The latent channels that carry the code: the last len(SHAPES)."""
    return slice(latent_channels - len(SHAPES), latent_channels)


def read_shape(latents: torch.Tensor, latent_channels: int) -> list[str]:
    """The shape each (B, C, T', h, w) scaled latent's code names: the strongest summed channel."""
    code = latents[:, shape_code_channels(latent_channels)].clamp(min=0).sum(dim=(2, 3, 4))
    return [SHAPES[int(k)] for k in code.argmax(dim=1)]
