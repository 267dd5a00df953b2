"""LoRA files: FILE[:SCALE] parsing, the merge math, unloading, and clear errors in `generate --lora`."""

import pytest
import torch

from opensora.cli import main
from opensora.errors import UserError
from opensora.lora import parse_lora_spec, read_lora_file, write_lora_file
from opensora.pipeline import OpenSoraPipeline


def _random_lora(path, pipe, modules, rank=2, alpha=4.0, seed=0, preset="tiny-random"):
    layers = dict(pipe.transformer.named_modules())
    g = torch.Generator().manual_seed(seed)
    pairs = {
        m: (torch.randn(rank, layers[m].in_features, generator=g), torch.randn(layers[m].out_features, rank, generator=g))
        for m in modules
    }
    write_lora_file(path, pairs, rank, alpha, ["to_q"], preset)
    return pairs


@pytest.fixture()
def pipe():
    return OpenSoraPipeline.from_preset("tiny-random")  # its own copy: load_lora changes weights


def test_merge_is_w_plus_scale_alpha_over_r_b_a(tmp_path, pipe):
    modules = ["transformer_blocks.0.attn.to_q", "single_transformer_blocks.1.attn.to_v"]
    pairs = _random_lora(tmp_path / "a.safetensors", pipe, modules)
    layers = dict(pipe.transformer.named_modules())
    before = {m: layers[m].weight.detach().clone() for m in modules}
    untouched = layers["transformer_blocks.0.attn.to_k"].weight.detach().clone()

    pipe.load_lora(tmp_path / "a.safetensors", scale=0.5)
    for m in modules:
        a, b = pairs[m]
        assert torch.allclose(layers[m].weight, before[m] + 0.5 * (4.0 / 2) * b @ a, atol=1e-5)
    assert torch.equal(layers["transformer_blocks.0.attn.to_k"].weight, untouched)
    assert pipe.loras == [{"path": str(tmp_path / "a.safetensors"), "scale": 0.5}]

    pipe.load_lora(tmp_path / "a.safetensors", scale=0.5)  # stacking adds a second delta
    a, b = pairs[modules[0]]
    assert torch.allclose(layers[modules[0]].weight, before[modules[0]] + 2 * b @ a, atol=1e-4)
    pipe.unload_loras()
    assert all(torch.equal(layers[m].weight, before[m]) for m in modules) and pipe.loras == []


def test_spec_parsing(tmp_path):
    path = tmp_path / "style.safetensors"
    path.write_bytes(b"x")
    assert parse_lora_spec(str(path)) == (path, 1.0)
    assert parse_lora_spec(f"{path}:0.75") == (path, 0.75)
    assert parse_lora_spec(f"{path}:-1") == (path, -1.0)
    with pytest.raises(UserError, match=r"LoRA scale 'strong' .* is not a number; .*-10 to 10"):
        parse_lora_spec(f"{path}:strong")
    with pytest.raises(UserError, match=r"LoRA scale 99.0 .* is out of range: allowed -10 to 10"):
        parse_lora_spec(f"{path}:99")
    with pytest.raises(UserError, match=r"LoRA file .*missing.safetensors does not exist"):
        parse_lora_spec(str(tmp_path / "missing.safetensors:0.5"))


def test_files_that_are_not_loras_are_named(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, tmp_path / "model.safetensors")
    with pytest.raises(UserError, match=r"not an Open-Sora Studio LoRA"):
        read_lora_file(tmp_path / "model.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    with pytest.raises(UserError, match=r"not a readable safetensors file"):
        read_lora_file(tmp_path / "junk.safetensors")


def test_lora_for_another_architecture_is_refused_by_name(tmp_path, pipe):
    layers = dict(pipe.transformer.named_modules())
    q = layers["transformer_blocks.0.attn.to_q"]
    pairs = {
        "transformer_blocks.0.attn.to_q": (torch.zeros(2, q.in_features * 2), torch.zeros(q.out_features, 2)),
        "transformer_blocks.7.attn.to_q": (torch.zeros(2, 8), torch.zeros(8, 2)),
    }
    write_lora_file(tmp_path / "big.safetensors", pairs, 2, 2.0, ["to_q"], "opensora-v2-256px")
    with pytest.raises(UserError) as err:
        pipe.load_lora(tmp_path / "big.safetensors")
    message = str(err.value)
    assert "made for preset opensora-v2-256px" in message and "does not fit preset tiny-random" in message
    # One line (#29.12): which layer first, and what to do, not every module's shapes.
    assert "\n" not in message and "first: transformer_blocks.0.attn.to_q" in message
    assert "switch the preset to opensora-v2-256px" in message and "A[2, 128]" not in message


@pytest.mark.parametrize(
    "spec, message",
    [
        ("{tmp}/missing.safetensors", "LoRA file {tmp}/missing.safetensors does not exist"),
        ("{tmp}/big.safetensors:x", "LoRA scale 'x'"),
        ("{tmp}/big.safetensors", "does not fit preset tiny-random"),
    ],
)
def test_generate_lora_errors_exit_2(tmp_path, capsys, pipe, spec, message):
    layers = dict(pipe.transformer.named_modules())
    q = layers["transformer_blocks.0.attn.to_q"]
    write_lora_file(tmp_path / "big.safetensors", {"transformer_blocks.0.attn.to_q": (
        torch.zeros(2, q.in_features + 1), torch.zeros(q.out_features, 2))}, 2, 2.0, ["to_q"], "other")
    code = main(["generate", "--preset", "tiny-random", "--prompt", "a cat", "--num-steps", "1",
                 "--output-dir", str(tmp_path / "out"), "--lora", spec.format(tmp=tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and message.format(tmp=tmp_path) in err and "Traceback" not in err
