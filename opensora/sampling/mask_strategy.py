"""The Open-Sora 1.2 mask strategy: which reference latent frames are written into which frames of
the video, and with what edit ratio (sampler_spec_v1_2.md, section 7).

    strategy := "" | group (";" group)*
    group    := loop_id[,ref_index[,ref_start[,target_start[,length[,edit_ratio]]]]]

Missing trailing fields default to 0,0,0,0,1,0. Positions are latent frames (1 latent frame = one
image or the first pixel frame, 5 = 17 pixel frames); negative starts count from the end. With the
official `align=5` both starts snap to a multiple of 5 (rounding up is refused at the last
multiple), so a tail image in a 10-latent-frame video lands on frame 5. Edit ratio 0 keeps the
reference exactly, 1 regenerates, in between re-noises it partway (SDEdit-like).
"""

from dataclasses import dataclass

import torch

from opensora.errors import UserError
from opensora.sampling.conditioning import ReferenceSpec

FIELDS = ("loop_id", "ref_index", "ref_start", "target_start", "length", "edit_ratio")
DEFAULTS = (0, 0, 0, 0, 1, 0.0)
OFFICIAL_ALIGN = 5
CONDITION_FRAME_LENGTH = 5  # latent frames a video reference conditions on (17 pixel frames)


@dataclass(frozen=True)
class MaskGroup:
    loop_id: int = 0
    ref_index: int = 0
    ref_start: int = 0
    target_start: int = 0
    length: int = 1
    edit_ratio: float = 0.0


@dataclass(frozen=True)
class Placement:
    """Latent frames target_start .. +length of the video <- frames ref_start .. of reference ref_index."""

    ref_index: int
    ref_start: int
    target_start: int
    length: int
    edit_ratio: float


def parse_mask_strategy(text: str) -> list[MaskGroup]:
    """Groups of a strategy string; "" is no group (every frame generated)."""
    text = text.strip()
    if not text:
        return []
    groups = []
    for raw in text.split(";"):
        parts = [p.strip() for p in raw.split(",")]
        if len(parts) > len(FIELDS) or any(p == "" for p in parts):
            raise UserError(
                f"mask strategy group {raw!r} must be 1 to 6 comma-separated numbers "
                f"({','.join(FIELDS)}), groups separated by ';'"
            )
        values = list(DEFAULTS)
        for i, part in enumerate(parts):
            try:
                values[i] = float(part) if i == 5 else int(part)
            except ValueError:
                kind = "a number" if i == 5 else "an integer"
                raise UserError(f"mask strategy group {raw!r}: {FIELDS[i]} {part!r} must be {kind}") from None
        group = MaskGroup(*values)
        if group.loop_id < 0 or group.ref_index < 0 or group.length < 1:
            raise UserError(
                f"mask strategy group {raw!r}: loop_id and ref_index must be >= 0 and length >= 1"
            )
        if not 0.0 <= group.edit_ratio <= 1.0:
            raise UserError(f"mask strategy group {raw!r}: edit_ratio {group.edit_ratio} must be in 0..1")
        groups.append(group)
    return groups


def snap(position: int, align: int, limit: int) -> int:
    """The official alignment: nearest multiple of `align`, never rounding up to the last one or past it."""
    k = position // align
    if position % align > align / 2 and k < limit // align - 1:
        k += 1
    return k * align


def place(
    groups: list[MaskGroup], latent_frames: int, ref_frames: list[int], loop_i: int = 0,
    align: int | None = OFFICIAL_ALIGN,
) -> list[Placement]:
    """Where each group of loop `loop_i` writes, for a video of `latent_frames` and references of
    `ref_frames[j]` latent frames (later placements overwrite earlier ones)."""
    placements = []
    for group in groups:
        if group.loop_id != loop_i:
            continue
        if group.ref_index >= len(ref_frames):
            raise UserError(
                f"mask strategy uses reference {group.ref_index} but {len(ref_frames)} reference(s) were given "
                f"(allowed ref_index: 0..{len(ref_frames) - 1})" if ref_frames else
                f"mask strategy uses reference {group.ref_index} but no reference was given"
            )
        ref_len = ref_frames[group.ref_index]
        ref_start = group.ref_start + ref_len if group.ref_start < 0 else group.ref_start
        target_start = group.target_start + latent_frames if group.target_start < 0 else group.target_start
        if align is not None:
            ref_start, target_start = snap(ref_start, align, ref_len), snap(target_start, align, latent_frames)
        length = min(group.length, latent_frames - target_start, ref_len - ref_start)
        if ref_start < 0 or target_start < 0 or length < 1:
            raise UserError(
                f"mask strategy group {group_text(group)} writes no frame: target start {target_start} of "
                f"{latent_frames} latent frames, reference start {ref_start} of {ref_len}"
            )
        placements.append(Placement(group.ref_index, ref_start, target_start, length, group.edit_ratio))
    return placements


def group_text(group: MaskGroup) -> str:
    return ",".join(str(getattr(group, name)) for name in FIELDS)


def frame_mask(placements: list[Placement], latent_frames: int) -> torch.Tensor:
    """(T,) float: 1 = generate, the edit ratio at conditioned frames."""
    mask = torch.ones(latent_frames)
    for p in placements:
        mask[p.target_start : p.target_start + p.length] = p.edit_ratio
    return mask


def apply_mask_strategy(
    noise: torch.Tensor,
    references: list[list[torch.Tensor]],
    strategies: list[str],
    loop_i: int = 0,
    align: int | None = OFFICIAL_ALIGN,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(z, masks): `noise` (B,C,T,h,w) with reference latent frames written in (a copy), and (B,T) masks.

    references[b][j] is reference j of item b, a (C, T_ref, h, w) latent (vae.encode of the file)."""
    if len(strategies) != noise.shape[0] or len(references) != noise.shape[0]:
        raise ValueError(f"need one strategy and one reference list per batch item ({noise.shape[0]})")
    z, t = noise.clone(), noise.shape[2]
    masks = []
    for i, (strategy, refs) in enumerate(zip(strategies, references)):
        placements = place(parse_mask_strategy(strategy), t, [r.shape[1] for r in refs], loop_i, align)
        for p in placements:
            ref = refs[p.ref_index]
            if ref.shape[0] != z.shape[1] or ref.shape[2:] != z.shape[3:]:
                raise UserError(
                    f"reference {p.ref_index} has latent shape {tuple(ref.shape)}, the video needs "
                    f"({z.shape[1]}, T, {z.shape[3]}, {z.shape[4]}): encode it at the video's size"
                )
            z[i, :, p.target_start : p.target_start + p.length] = ref[:, p.ref_start : p.ref_start + p.length].to(z)
        masks.append(frame_mask(placements, t))
    return z, torch.stack(masks).to(noise.device)


# ---------------------------------------------------------------------------------------------
# This app's cond types, where Open-Sora 1.2 can mean the same thing.

COND_TYPES_V1_2 = ("t2v", "i2v_head", "i2v_tail", "i2v_loop", "v2v_head", "v2v_tail")


def cond_type_strategy(cond_type: str, num_references: int = 1) -> str:
    """The mask strategy of a cond type. i2v_*: one image latent frame; v2v_*: 5 latent frames
    (17 pixel frames) of the reference video at the head / tail. i2v_loop uses the first reference
    at the head and the last at the tail (one reference: the same image at both ends).

    With the official align=5 a tail lands on the last multiple of 5: on the true tail only when
    the video has 5k+1 latent frames (i2v_tail/i2v_loop: 17k+1 pixel frames) or 5k (v2v_tail: 17k)."""
    n = CONDITION_FRAME_LENGTH
    strategies = {
        "t2v": "",
        "i2v_head": "0",
        "i2v_tail": f"0,{num_references - 1},0,-1,1",
        "i2v_loop": f"0;0,{num_references - 1},0,-1,1",
        "v2v_head": f"0,0,0,0,{n}",
        "v2v_tail": f"0,0,-{n},-{n},{n}",
    }
    if cond_type not in strategies:
        raise UserError(
            f"cond type {cond_type!r} has no Open-Sora 1.2 equivalent; allowed: {', '.join(COND_TYPES_V1_2)} "
            "(or a raw mask strategy)"
        )
    if cond_type != "t2v" and num_references < 1:
        raise UserError(f"cond type {cond_type} needs a reference (--ref)")
    return strategies[cond_type]


def reference_spec_v1_2(cond_type: str) -> ReferenceSpec | None:
    """What to read from the reference file(s) for a cond type (same meaning as Open-Sora 2.0's,
    with 17 pixel frames for the video types)."""
    cond_type_strategy(cond_type)  # validates the name
    if cond_type == "t2v":
        return None
    if cond_type == "i2v_head":
        return ReferenceSpec(1, "first", "first")
    if cond_type == "i2v_tail":
        return ReferenceSpec(1, "last", "last")
    if cond_type == "i2v_loop":
        return ReferenceSpec(1, "first", "first_and_last")
    frames = 17  # CONDITION_FRAME_LENGTH latent frames = one full micro-chunk
    return ReferenceSpec(frames, "first" if cond_type == "v2v_head" else "last", "first")


def resolve_strategy(cond_type: str | None, mask_strategy: str | None, num_references: int) -> str:
    """A raw strategy wins; otherwise the cond type's (t2v when neither is given)."""
    if mask_strategy is not None and mask_strategy.strip():
        parse_mask_strategy(mask_strategy)  # fail early, before any model loads
        return mask_strategy.strip()
    return cond_type_strategy(cond_type or "t2v", num_references)
