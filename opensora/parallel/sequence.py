"""Split the image-token sequence over ranks around one MMDiT call, and put it back together.

Rank r holds the padded positions [r * per_rank, (r + 1) * per_rank): the sequence is padded with
zero tokens at its end to a multiple of the world size. The padded tokens are never attended to
(the Ulysses processor drops them from the keys and values) and are cut off after the gather.
Text tokens are not split: every rank holds all of them (they are few next to the video's).
"""

from dataclasses import dataclass

import torch
import torch.distributed as dist
from diffusers import FluxTransformer2DModel

from opensora.parallel.process_group import rank, world_size


@dataclass(frozen=True)
class SequenceShard:
    tokens: int  # real image tokens
    text_tokens: int  # text tokens, the same on every rank
    world_size: int = 1
    rank: int = 0

    @property
    def per_rank(self) -> int:
        return -(-self.tokens // self.world_size)

    @property
    def padded(self) -> int:
        return self.per_rank * self.world_size

    @property
    def start(self) -> int:
        return self.rank * self.per_rank


def shard_tokens(x: torch.Tensor, shard: SequenceShard, dim: int) -> torch.Tensor:
    """This rank's slice of `x` along the token dimension `dim`, zero-padded as the layout says."""
    missing = shard.padded - x.shape[dim]
    if missing:
        pad_shape = list(x.shape)
        pad_shape[dim] = missing
        x = torch.cat([x, x.new_zeros(pad_shape)], dim=dim)
    return x.narrow(dim, shard.start, shard.per_rank).contiguous()


def gather_tokens(x: torch.Tensor, shard: SequenceShard, dim: int) -> torch.Tensor:
    """Every rank's slice back in order, padding cut off: the full sequence on every rank."""
    if shard.world_size == 1:
        return x.narrow(dim, 0, shard.tokens)
    parts = [torch.empty_like(x) for _ in range(shard.world_size)]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=dim).narrow(dim, 0, shard.tokens)


def sharded_mmdit_forward(
    model: FluxTransformer2DModel,
    img: torch.Tensor,
    cond: torch.Tensor | None,
    txt: torch.Tensor,
    y_vec: torch.Tensor,
    timesteps: torch.Tensor,
    img_ids: torch.Tensor,
) -> torch.Tensor:
    """`mmdit_forward` with the image tokens split over the ranks (the same signature, so it is a
    drop-in `model_fn` for `denoise`). Every rank passes the full inputs and gets the full velocity.

    The model's attention processors must be `UlyssesAttnProcessor` (`enable_sequence_parallel`);
    with one rank this is the plain forward.
    """
    shard = SequenceShard(tokens=img.shape[1], text_tokens=txt.shape[1], world_size=world_size(), rank=rank())
    hidden = img if cond is None else torch.cat([img, cond.to(img.dtype)], dim=-1)
    txt_ids = torch.zeros(txt.shape[1], 3, dtype=img_ids.dtype, device=img_ids.device)
    local = model(
        hidden_states=shard_tokens(hidden, shard, dim=1),
        encoder_hidden_states=txt,
        pooled_projections=y_vec,
        timestep=timesteps,
        img_ids=shard_tokens(img_ids, shard, dim=0),  # RoPE of this rank's own tokens
        txt_ids=txt_ids,
        joint_attention_kwargs={"sequence_shard": shard},
        return_dict=False,
    )[0]
    return gather_tokens(local, shard, dim=1)
