"""`python -m training average-weights`: the mean of several weight files, loadable as the model."""

import pytest
import torch
from mmdit_weights import trained_looking_weights
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from opensora.models.mmdit import build_mmdit
from opensora.models.mmdit_convert import official_to_diffusers
from opensora.presets import load_preset
from training.cli import main

CONFIG = load_preset("tiny-random").mmdit


def write(path, state, metadata=None):
    save_file(state, path, metadata)
    return str(path)


def test_average_of_three_bf16_runs_loads_as_the_model(tmp_path, capsys):
    runs = [{k: v.to(torch.bfloat16) for k, v in trained_looking_weights(CONFIG, seed).items()} for seed in (1, 2, 3)]
    files = [write(tmp_path / f"run{i}.safetensors", s, {"format": "opensora-v2-mmdit"}) for i, s in enumerate(runs)]
    out = tmp_path / "soup" / "mmdit.safetensors"

    assert main(["average-weights", "--out", str(out), *files]) == 0
    assert f"averaged 3 files ({len(runs[0])} tensors)" in capsys.readouterr().out

    soup = load_file(out)
    key = "double_blocks.0.img_attn.q_proj.weight"
    expected = ((runs[0][key].float() + runs[1][key].float() + runs[2][key].float()) / 3).to(torch.bfloat16)
    assert soup[key].dtype == torch.bfloat16
    assert torch.equal(soup[key], expected)
    assert not torch.equal(soup[key], runs[0][key])
    with safe_open(str(out), "pt") as f:
        assert f.metadata() == {"format": "opensora-v2-mmdit"}
    model = build_mmdit(CONFIG)
    model.load_state_dict(official_to_diffusers({k: v.float() for k, v in soup.items()}, CONFIG))  # strict


def test_mismatched_files_are_refused_with_the_key_and_shapes(tmp_path, capsys):
    a = trained_looking_weights(CONFIG, 1)
    b = dict(a)
    b["final_layer.linear.weight"] = torch.zeros(3, 3)
    c = {k: v for k, v in a.items() if k != "final_layer.linear.bias"}
    fa, fb, fc = (write(tmp_path / f"{n}.safetensors", s) for n, s in (("a", a), ("b", b), ("c", c)))
    out = tmp_path / "out.safetensors"

    assert main(["average-weights", "--out", str(out), fa, fb]) == 2
    shape = tuple(a["final_layer.linear.weight"].shape)
    assert f"final_layer.linear.weight has shape (3, 3), {fa} has {shape}" in capsys.readouterr().err

    assert main(["average-weights", "--out", str(out), fa, fc]) == 2
    assert "missing ['final_layer.linear.bias']" in capsys.readouterr().err

    assert main(["average-weights", "--out", str(out), fa]) == 2
    assert "average needs at least 2 weight files, got 1" in capsys.readouterr().err
    assert not out.exists()


def test_integer_tensors_must_agree(tmp_path, capsys):
    fa = write(tmp_path / "a.safetensors", {"w": torch.ones(2), "step": torch.tensor([3])})
    fb = write(tmp_path / "b.safetensors", {"w": torch.zeros(2), "step": torch.tensor([3])})
    fc = write(tmp_path / "c.safetensors", {"w": torch.zeros(2), "step": torch.tensor([4])})
    assert main(["average-weights", "--out", str(tmp_path / "ab.safetensors"), fa, fb]) == 0
    ab = load_file(tmp_path / "ab.safetensors")
    assert torch.equal(ab["w"], torch.full((2,), 0.5)) and torch.equal(ab["step"], torch.tensor([3]))
    assert main(["average-weights", "--out", str(tmp_path / "ac.safetensors"), fa, fc]) == 2
    assert "step is not a float tensor and differs between the files" in capsys.readouterr().err
