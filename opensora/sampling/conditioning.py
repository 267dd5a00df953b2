"""Image/video conditioning layouts (mask + masked reference latent), as the official inference.

A batch item's references are a list of scaled VAE latents (C, T_ref, H, W). The condition marks
the latent frames that come from a reference (mask 1) and holds those frames' latents; the MMDiT
sees `pack(cat([mask, masked_ref]))` through its condition input.
"""

from dataclasses import dataclass

import torch

from opensora.errors import UserError

COND_TYPES = (
    "t2v",
    "i2v_head",
    "i2v_tail",
    "i2v_loop",
    "v2v_head",
    "v2v_tail",
    "v2v_head_easy",
    "v2v_tail_easy",
)
# Named in the official 256px config's comment but rejected by its code; they mean the "easy" variants.
COND_ALIASES = {"v2v_head_half": "v2v_head_easy", "v2v_tail_half": "v2v_tail_easy"}

# Conditioned latent frames of the video-to-video types: 33 (8*4 + 1) or 65 (16*4 + 1) pixel frames.
V2V_LATENT_FRAMES = {"v2v_head": 9, "v2v_tail": 9, "v2v_head_easy": 17, "v2v_tail_easy": 17}


def normalize_cond_type(cond_type: str) -> str:
    name = COND_ALIASES.get(cond_type, cond_type)
    if name not in COND_TYPES:
        allowed = ", ".join(COND_TYPES + tuple(COND_ALIASES))
        raise UserError(f"unknown cond type {cond_type!r}; allowed: {allowed}")
    return name


@dataclass(frozen=True)
class ReferenceSpec:
    """Which pixel frames of the reference file(s) a cond type encodes."""

    frames: int  # pixel frames to read (1 for images)
    which: str  # "first" or "last" part of the file
    paths: str  # "first", "last" or "first_and_last" path of the ';'-separated list


def reference_spec(cond_type: str) -> ReferenceSpec | None:
    """What the official loader reads for each cond type (sampler_spec.md, section 7)."""
    if cond_type == "t2v":
        return None
    if cond_type == "i2v_head":
        return ReferenceSpec(1, "first", "first")
    if cond_type == "i2v_tail":
        return ReferenceSpec(1, "last", "last")
    if cond_type == "i2v_loop":
        return ReferenceSpec(1, "first", "first_and_last")
    frames = (V2V_LATENT_FRAMES[cond_type] - 1) * 4 + 1
    return ReferenceSpec(frames, "first" if "head" in cond_type else "last", "first")


def prepare_condition(
    latent_shape: tuple[int, ...], cond_type: str, references: list[list[torch.Tensor] | None]
) -> tuple[torch.Tensor, torch.Tensor]:
    """masks (B,1,T,H,W) and masked_ref (B,C,T,H,W) for a latent of `latent_shape` (B,C,T,H,W).

    `references[b]` is the list of reference latents of item b (None or [] -> no condition).
    Nothing is set when the video has a single latent frame, as in the official code.
    """
    cond_type = normalize_cond_type(cond_type)
    b, c, t, h, w = latent_shape
    masks = torch.zeros(b, 1, t, h, w)
    masked_ref = torch.zeros(b, c, t, h, w)
    if cond_type == "t2v" or t == 1:
        return masks, masked_ref
    for i, refs in enumerate(references):
        if not refs:
            continue
        if cond_type == "i2v_head":
            masks[i, :, 0] = 1
            masked_ref[i, :, 0] = refs[0][:, 0]
        elif cond_type == "i2v_tail":
            masks[i, :, -1] = 1
            masked_ref[i, :, -1] = refs[-1][:, -1]
        elif cond_type == "i2v_loop":
            masks[i, :, 0] = 1
            masks[i, :, -1] = 1
            masked_ref[i, :, 0] = refs[0][:, 0]
            masked_ref[i, :, -1] = refs[-1][:, -1]
        else:
            k = V2V_LATENT_FRAMES[cond_type]
            if k > t:
                raise UserError(f"{cond_type} conditions on {k} latent frames but the video has only {t}")
            ref = refs[0]
            if ref.shape[1] < k:
                raise UserError(
                    f"{cond_type} needs a reference video of at least {(k - 1) * 4 + 1} frames "
                    f"({k} latent frames), got {ref.shape[1]} latent frames"
                )
            span = slice(0, k) if "head" in cond_type else slice(t - k, t)
            masks[i, :, span] = 1
            masked_ref[i, :, span] = ref[:, :k] if "head" in cond_type else ref[:, -k:]
    return masks, masked_ref


def replace_reference_frames(
    latent: torch.Tensor, cond_type: str, references: list[list[torch.Tensor] | None]
) -> torch.Tensor:
    """After sampling, write the reference latents back into their frames (i2v types only).

    The official code does this for batch item 0 only; here every item with references gets it
    (identical for the single-prompt calls the official script makes).
    """
    if not cond_type.startswith("i2v"):
        return latent
    latent = latent.clone()
    for i, refs in enumerate(references):
        if not refs:
            continue
        if cond_type in ("i2v_head", "i2v_loop"):
            latent[i, :, 0] = refs[0][:, 0]
        if cond_type == "i2v_tail":
            latent[i, :, -1] = refs[0][:, 0]
        if cond_type == "i2v_loop":
            latent[i, :, -1] = refs[-1][:, -1]
    return latent
