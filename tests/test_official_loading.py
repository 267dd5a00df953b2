"""The official loading path end to end: a checkpoint folder laid out like ./ckpts (official file
names, official key layout, T5/CLIP as transformers folders) read by an "official" preset."""

import json
import shutil

import pytest
import torch

from conftest import FIXTURES
from opensora.cli import main
from opensora.errors import UserError
from opensora.models.text_encoders import TextConditioner, TextConfig
from opensora.pipeline import OpenSoraPipeline

PRESET = """
name = "fixture-official"
description = "the official layout at fixture size"
weights = "official"
download = "huggingface-cli download hpcai-tech/Open-Sora-v2 --local-dir ./ckpts"

[mmdit]
{mmdit}

[vae]
block_out_channels = [8, 16, 16, 16]
layers_per_block = 2
norm_num_groups = 4

[text]
t5_max_length = 16
clip_max_length = 16

[sampler]
resolution = "tiny"
aspect_ratio = "3:2"
num_frames = 9
num_steps = 2
fps = 24

[buckets.tiny]
"3:2" = [32, 48]
"""


@pytest.fixture(scope="module")
def ckpt_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpts")
    shutil.copy(FIXTURES / "mmdit_tiny_weights.safetensors", root / "Open_Sora_v2.safetensors")
    shutil.copy(FIXTURES / "hunyuan_vae_tiny_weights.safetensors", root / "hunyuan_vae.safetensors")
    text = TextConditioner.random(TextConfig(t5_max_length=16, clip_max_length=16), 24, 16, seed=5)
    for model, tokenizer, folder in ((text.t5, text.t5_tokenizer, "google/t5-v1_1-xxl"),
                                     (text.clip, text.clip_tokenizer, "openai/clip-vit-large-patch14")):
        model.save_pretrained(root / folder)
        tokenizer.save_pretrained(root / folder)
    config = json.loads((FIXTURES / "mmdit_tiny.json").read_text())["config"]
    lines = [f"{k} = {json.dumps(v)}" for k, v in config.items() if k not in ("guidance_embed", "fused_qkv", "grad_ckpt_settings")]
    preset_path = root / "fixture-official.toml"
    preset_path.write_text(PRESET.format(mmdit="\n".join(lines)))
    return root, preset_path, text


def test_official_folder_loads_and_generates(ckpt_dir, tmp_path):
    root, preset_path, text = ckpt_dir
    pipe = OpenSoraPipeline.from_preset(str(preset_path), ckpt_dir=root)
    # The encoders read back from the folders compute what the saved ones did.
    saved, loaded = text.encode(["a red fox"]), pipe.text_encoder.encode(["a red fox"])
    assert torch.allclose(saved[0], loaded[0]) and torch.allclose(saved[1], loaded[1])
    out = tmp_path / "out"
    assert main(["generate", "--preset", str(preset_path), "--ckpt-dir", str(root), "--prompt", "a red fox",
                 "--output-dir", str(out), "--seed", "1"]) == 0
    assert (out / "0000.mp4").is_file()


def broken_copy(ckpt_dir, tmp_path):
    root, preset_path, _ = ckpt_dir
    broken = tmp_path / "ckpts"
    shutil.copytree(root, broken)
    return broken, preset_path


def test_missing_key_is_named(ckpt_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    broken, preset_path = broken_copy(ckpt_dir, tmp_path)
    weights = load_file(str(broken / "Open_Sora_v2.safetensors"))
    del weights["single_blocks.1.linear2.bias"]
    save_file(weights, str(broken / "Open_Sora_v2.safetensors"))
    with pytest.raises(UserError, match=r"1 missing keys: single_blocks\.1\.linear2\.bias"):
        OpenSoraPipeline.from_preset(str(preset_path), ckpt_dir=broken)


def test_not_a_safetensors_file(ckpt_dir, tmp_path):
    broken, preset_path = broken_copy(ckpt_dir, tmp_path)
    (broken / "hunyuan_vae.safetensors").write_bytes(b"\x80\x04pickle? no thanks")
    with pytest.raises(UserError, match=r"hunyuan_vae\.safetensors \(not a safetensors file \(header length \d+ in a file of 19 bytes"):
        OpenSoraPipeline.from_preset(str(preset_path), ckpt_dir=broken)


def test_corrupt_text_encoder_folder(ckpt_dir, tmp_path):
    broken, preset_path = broken_copy(ckpt_dir, tmp_path)
    (broken / "google/t5-v1_1-xxl/model.safetensors").write_bytes(b"truncated")
    with pytest.raises(UserError, match=r"t5-v1_1-xxl \(model\.safetensors: not a safetensors file"):
        OpenSoraPipeline.from_preset(str(preset_path), ckpt_dir=broken)
