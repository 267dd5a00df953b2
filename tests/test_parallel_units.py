"""Sequence-parallel pieces in one process: the token layout and the processor's math."""

import torch

from opensora.models.mmdit import mmdit_forward
from opensora.parallel.process_group import ParallelState, init_from_env, torchrun_argv
from opensora.parallel.sequence import SequenceShard, gather_tokens, shard_tokens, sharded_mmdit_forward
from opensora.parallel.ulysses import UlyssesAttnProcessor, enable_sequence_parallel


def test_odd_token_count_is_padded_at_the_end():
    x = torch.arange(1, 28, dtype=torch.float32)[None, :, None]  # 27 tokens
    first, second = (shard_tokens(x, SequenceShard(27, 5, world_size=2, rank=r), dim=1) for r in (0, 1))
    assert first.shape == second.shape == (1, 14, 1)
    assert first[0, :, 0].tolist() == list(range(1, 15))
    assert second[0, :, 0].tolist() == list(range(15, 28)) + [0]  # one zero pad token on the last rank
    single = SequenceShard(27, 5)
    assert torch.equal(gather_tokens(shard_tokens(x, single, dim=1), single, dim=1), x)


def test_single_process_state_without_torchrun(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert init_from_env() == ParallelState()
    argv = torchrun_argv(4, ["-m", "opensora", "generate", "--prompt", "a cat"])
    assert argv[1:4] == ["-m", "torch.distributed.run", "--standalone"] and "--nproc_per_node=4" in argv
    assert argv[-4:] == ["opensora", "generate", "--prompt", "a cat"]


def test_ulysses_processor_is_the_flux_math_on_one_rank(tiny_pipeline):
    """The processor replaces diffusers' in every block: same velocity as the official path."""
    transformer = tiny_pipeline.transformer
    generator = torch.Generator().manual_seed(0)
    img = torch.randn(3, 27, 64, generator=generator)
    cond = torch.randn(3, 27, 68, generator=generator)
    txt, y_vec = torch.randn(3, 32, 24, generator=generator), torch.randn(3, 16, generator=generator)
    t = torch.full((3,), 0.7)
    ids = torch.randn(27, 3, generator=generator) * 4
    with torch.no_grad():
        expected = mmdit_forward(transformer, img, cond, txt, y_vec, t, ids)
        original = transformer.attn_processors
        try:
            enable_sequence_parallel(transformer)
            assert all(isinstance(p, UlyssesAttnProcessor) for p in transformer.attn_processors.values())
            got = sharded_mmdit_forward(transformer, img, cond, txt, y_vec, t, ids)
        finally:
            transformer.set_attn_processor(original)
    assert (got - expected).abs().max().item() <= 1e-6
