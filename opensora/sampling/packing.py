"""Latent <-> token packing and position ids, in the official order.

pack: `b c t (h p) (w p) -> b (t h w) (c p p)`: tokens t-major then h then w; features
channel-major then the p x p patch row-major.
"""

import torch


def pack(latent: torch.Tensor, patch_size: int) -> torch.Tensor:
    b, c, t, h, w = latent.shape
    p = patch_size
    x = latent.reshape(b, c, t, h // p, p, w // p, p)
    x = x.permute(0, 2, 3, 5, 1, 4, 6)  # b t h w c ph pw
    return x.reshape(b, t * (h // p) * (w // p), c * p * p)


def unpack(tokens: torch.Tensor, patch_size: int, latent_t: int, latent_h: int, latent_w: int) -> torch.Tensor:
    b, _, features = tokens.shape
    p = patch_size
    c = features // (p * p)
    x = tokens.reshape(b, latent_t, latent_h // p, latent_w // p, c, p, p)
    x = x.permute(0, 4, 1, 2, 5, 3, 6)  # b c t h ph w pw
    return x.reshape(b, c, latent_t, latent_h, latent_w)


def image_position_ids(latent_t: int, latent_h: int, latent_w: int, patch_size: int) -> torch.Tensor:
    """(N, 3) float (t, h_patch, w_patch) ids of every image token; text ids are all zero."""
    t, h, w = torch.meshgrid(
        torch.arange(latent_t), torch.arange(latent_h // patch_size), torch.arange(latent_w // patch_size), indexing="ij"
    )
    return torch.stack([t, h, w], dim=-1).reshape(-1, 3).float()
