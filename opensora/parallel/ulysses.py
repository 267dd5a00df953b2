"""Ulysses sequence parallelism for the MMDiT's joint attention (heads <-> sequence all-to-all).

Each rank enters attention with the q/k/v of all heads for its slice of the image tokens (plus
all text tokens). One all-to-all trades that for all image tokens of 1/world of the heads; each
rank attends over the whole sequence for its heads (exactly the single-process math, head by
head), and a second all-to-all trades back. Text rows are the same on every rank, so each rank
takes its heads' columns and the text output is gathered over heads.
"""

import torch
import torch.distributed as dist
from diffusers import FluxTransformer2DModel
from diffusers.models.attention_dispatch import dispatch_attention_fn
from diffusers.models.embeddings import apply_rotary_emb
from diffusers.models.transformers.transformer_flux import FluxAttention, _get_qkv_projections

from opensora.errors import UserError
from opensora.parallel.process_group import world_size
from opensora.parallel.sequence import SequenceShard


def sequence_to_heads(x: torch.Tensor, world: int) -> torch.Tensor:
    """(B, n, H, D) for this rank's n tokens -> (B, world * n, H / world, D) for this rank's heads."""
    if world == 1:
        return x
    b, n, h, d = x.shape
    send = x.reshape(b, n, world, h // world, d).permute(2, 0, 1, 3, 4).contiguous()
    received = torch.empty_like(send)  # received[i]: rank i's tokens, this rank's heads
    dist.all_to_all_single(received, send)
    return received.permute(1, 0, 2, 3, 4).reshape(b, world * n, h // world, d)


def heads_to_sequence(x: torch.Tensor, world: int) -> torch.Tensor:
    """The inverse: (B, world * n, h, D) -> (B, n, world * h, D)."""
    if world == 1:
        return x
    b, s, h, d = x.shape
    send = x.reshape(b, world, s // world, h, d).permute(1, 0, 2, 3, 4).contiguous()
    received = torch.empty_like(send)  # received[i]: rank i's heads, this rank's tokens
    dist.all_to_all_single(received, send)
    return received.permute(1, 2, 0, 3, 4).reshape(b, s // world, world * h, d)


def gather_heads(x: torch.Tensor, world: int) -> torch.Tensor:
    """(B, L, h, D) of this rank's heads -> (B, L, world * h, D)."""
    if world == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(world)]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=2)


class UlyssesAttnProcessor:
    """diffusers' `FluxAttnProcessor` math with the image tokens split over ranks.

    Called by `FluxAttention` in both block kinds: double-stream blocks pass the text as
    `encoder_hidden_states`; single-stream blocks pass `[text, image]` concatenated, so the text
    length comes from `sequence_shard`. Without a shard (or with one rank) it is the plain processor.
    """

    _attention_backend = None  # set by `set_attention_backend` / `apply_attention_backend`
    _parallel_config = None

    def __call__(
        self,
        attn: FluxAttention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
        sequence_shard: SequenceShard | None = None,
    ):
        if attention_mask is not None:
            raise ValueError("UlyssesAttnProcessor: the Open-Sora MMDiT attends without a mask")
        world = 1 if sequence_shard is None else sequence_shard.world_size
        query, key, value, text_query, text_key, text_value = _get_qkv_projections(attn, hidden_states, encoder_hidden_states)
        query = attn.norm_q(query.unflatten(-1, (-1, attn.head_dim)))
        key = attn.norm_k(key.unflatten(-1, (-1, attn.head_dim)))
        value = value.unflatten(-1, (-1, attn.head_dim))
        if encoder_hidden_states is not None and attn.added_kv_proj_dim is not None:
            text_len = encoder_hidden_states.shape[1]
            query = torch.cat([attn.norm_added_q(text_query.unflatten(-1, (-1, attn.head_dim))), query], dim=1)
            key = torch.cat([attn.norm_added_k(text_key.unflatten(-1, (-1, attn.head_dim))), key], dim=1)
            value = torch.cat([text_value.unflatten(-1, (-1, attn.head_dim)), value], dim=1)
        else:
            text_len = 0 if sequence_shard is None else sequence_shard.text_tokens
        if image_rotary_emb is not None:  # covers [text, this rank's image tokens]
            query = apply_rotary_emb(query, image_rotary_emb, sequence_dim=1)
            key = apply_rotary_emb(key, image_rotary_emb, sequence_dim=1)

        if world > 1:
            query, key, value = (self._all_image_tokens(x, text_len, sequence_shard) for x in (query, key, value))
            # Padded tokens leave the keys and values: nothing attends to them (queries there are cut later).
            real = text_len + sequence_shard.tokens
            key, value = key[:, :real], value[:, :real]
        out = dispatch_attention_fn(query, key, value, backend=self._attention_backend)
        if world > 1:
            out = torch.cat([gather_heads(out[:, :text_len], world), heads_to_sequence(out[:, text_len:], world)], dim=1)
        out = out.flatten(2, 3).to(query.dtype)

        if encoder_hidden_states is None:
            return out
        text_out, image_out = out[:, :text_len], out[:, text_len:]
        image_out = attn.to_out[1](attn.to_out[0](image_out.contiguous()))
        return image_out, attn.to_add_out(text_out.contiguous())

    @staticmethod
    def _all_image_tokens(x: torch.Tensor, text_len: int, shard: SequenceShard) -> torch.Tensor:
        """[text, local image] with all heads -> [text, all image tokens] with this rank's heads."""
        heads = x.shape[2] // shard.world_size
        text = x[:, :text_len, shard.rank * heads : (shard.rank + 1) * heads]
        return torch.cat([text, sequence_to_heads(x[:, text_len:], shard.world_size)], dim=1)


def enable_sequence_parallel(transformer: FluxTransformer2DModel) -> None:
    """Put the Ulysses processor in every attention layer, keeping the chosen attention backend."""
    world = world_size()
    heads = transformer.config.num_attention_heads
    if heads % world:
        divisors = [n for n in range(1, heads + 1) if heads % n == 0]
        raise UserError(
            f"sequence parallel over {world} processes needs the {heads} attention heads to split evenly; "
            f"use one of {divisors} processes (torchrun --nproc_per_node)"
        )
    backend = next(iter(transformer.attn_processors.values()))._attention_backend
    processor = UlyssesAttnProcessor()
    processor._attention_backend = backend
    transformer.set_attn_processor(processor)
