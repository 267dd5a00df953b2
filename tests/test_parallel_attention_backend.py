"""--attention: sdpa runs and gives the default numbers; a backend that cannot run is a UserError."""

import pytest
import torch

from opensora.errors import UserError
from opensora.models.mmdit import mmdit_forward
from opensora.parallel.attention_backend import apply_attention_backend, resolve_attention_backend


def test_auto_is_sdpa_on_a_cpu():
    assert resolve_attention_backend("auto", "cpu") == "sdpa"


@pytest.mark.parametrize("name", ["flash", "flash3", "sage", "xformers"])
def test_unusable_backend_names_the_reason_and_the_usable_ones(name):
    with pytest.raises(UserError, match=rf"attention backend '{name}' cannot be used: .*usable here: sdpa"):
        resolve_attention_backend(name, "cpu")


def test_unknown_backend_lists_the_allowed_names():
    with pytest.raises(UserError, match="unknown attention backend 'fast'; allowed: auto, sdpa, flash, flash3, sage, xformers"):
        resolve_attention_backend("fast")


def test_sdpa_runs_the_mmdit(tiny_pipeline):
    transformer = tiny_pipeline.transformer
    generator = torch.Generator().manual_seed(1)
    args = (
        torch.randn(3, 12, 64, generator=generator), torch.randn(3, 12, 68, generator=generator),
        torch.randn(3, 32, 24, generator=generator), torch.randn(3, 16, generator=generator),
        torch.full((3,), 0.5), torch.randn(12, 3, generator=generator),
    )
    with torch.no_grad():
        default = mmdit_forward(transformer, *args)
        assert apply_attention_backend(transformer, "sdpa") == "sdpa"
        assert all(p._attention_backend.value == "native" for p in transformer.attn_processors.values())
        routed = mmdit_forward(transformer, *args)
    transformer.reset_attention_backend()
    assert torch.equal(default, routed)


def test_backend_that_is_not_installed_says_which_package():
    with pytest.raises(UserError, match="attention backend 'flash' cannot be used: flash-attn is not installed"):
        resolve_attention_backend("flash", "cuda", torch.bfloat16)
    assert resolve_attention_backend("auto", "cuda", torch.bfloat16) == "sdpa"  # none of the GPU kernels here
