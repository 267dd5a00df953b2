"""The high-compression presets: the official `high-compression` (MMDiT with 128 channels and patch 1
over the Video DC-AE, T2I2V at 768px) and `tiny-random-hc`, which runs the whole path on a CPU."""

import json
import math
import subprocess
import sys

import av
import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import FIXTURES, REPO, run_cli
from opensora.configs import DCAEConfig
from opensora.errors import UserError
from opensora.generation_settings import GenerationRequest, resolve_settings
from opensora.loading import load_vae_weights, vae_key_shapes
from opensora.models.dc_ae import VideoDCAE
from opensora.models.mmdit_convert import official_key_shapes
from opensora.parity_dc_ae import load_tiny_dc_ae
from opensora.presets import load_preset


def mp4_frames(path) -> list:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def test_preset_describes_the_official_files_key_for_key():
    preset = load_preset("high-compression")
    assert (preset.files.mmdit, preset.files.vae) == ("Open_Sora_v2_Video_DC_AE.safetensors", "F32T4C128_AE.safetensors")
    assert isinstance(preset.vae, DCAEConfig) and preset.vae.scaling_factor is None  # unscaled inference latents
    dc_ae = json.loads((FIXTURES / "dc_ae_keys.json").read_text())
    assert vae_key_shapes(preset) == {e["name"]: tuple(e["shape"]) for e in dc_ae["keys"]}
    mmdit = json.loads((FIXTURES / "mmdit_v2_dcae_keys.json").read_text())
    assert official_key_shapes(preset.mmdit) == {e["name"]: tuple(e["shape"]) for e in mmdit["keys"]}
    assert preset.flux.use_t2i2v and preset.flux.image_resolution == "768px"


def test_buckets_are_the_768px_ones_rounded_up_to_32():
    official = load_preset("opensora-v2-768px").buckets["768px"]
    ours = load_preset("high-compression").buckets
    assert list(ours) == ["768px"]
    assert ours["768px"] == {ar: (math.ceil(h / 32) * 32, math.ceil(w / 32) * 32) for ar, (h, w) in official.items()}
    assert ours["768px"]["16:9"] == (576, 1024) and ours["768px"]["2.39:1"] == (512, 1184)


def test_reading_the_preset_stays_torch_free():
    code = ("import sys; from opensora.presets import load_preset; p = load_preset('high-compression'); "
            "assert p.vae.latent_frames(129) == 33; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_tiny_hc_generates_a_decodable_video_with_the_requested_frames(tmp_path):
    proc = run_cli("generate", "--preset", "tiny-random-hc", "--prompt", "a cat", "--num-frames", "13",
                   "--aspect-ratio", "9:16", "--num-steps", "2", "--seed", "5", "--output-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    frames = mp4_frames(tmp_path / "0000.mp4")
    assert len(frames) == 13 and frames[0].shape == (64, 32, 3)  # 4 latent frames decoded to 16, cut to 13
    sidecar = json.loads((tmp_path / "0000.json").read_text())
    assert sidecar["use_t2i2v"] and sidecar["t2i2v_image"] == "0000.png"  # as high-compression: T2I2V on


def test_tiny_hc_plain_t2v_samples_dc_ae_latents(tmp_path):
    from opensora.pipeline import OpenSoraPipeline

    pipe = OpenSoraPipeline.from_preset("tiny-random-hc")
    assert isinstance(pipe.vae, VideoDCAE)
    result = pipe("a cat", num_frames=9, seed=1, num_steps=2, use_t2i2v=False)
    # (9 - 1) // 4 + 1 = 3 latent frames of 32x64 / 32 positions, 16 channels; 12 frames decoded, cut to 9
    assert result.latents[0].shape == (16, 3, 1, 2)
    assert result.videos[0].shape == (3, 9, 32, 64) and result.images == []


@pytest.mark.parametrize("cond_type", ["v2v_head", "v2v_tail", "v2v_head_easy", "v2v_tail_easy"])
def test_v2v_with_the_dc_ae_is_refused_before_loading(cond_type, tmp_path):
    video = tmp_path / "clip.mp4"
    with pytest.raises(UserError) as err:
        resolve_settings(GenerationRequest(prompt="a cat", cond_type=cond_type, reference=[str(video)]),
                         load_preset("tiny-random-hc"))
    frames = 33 if cond_type in ("v2v_head", "v2v_tail") else 65
    assert str(err.value) == (
        f"cond type {cond_type} cannot run on preset tiny-random-hc: it encodes {frames} frames of the reference "
        "video, and the preset's Video DC-AE encodes only 1 or a multiple of 4 frames; use t2v or an image type "
        "(i2v_head, i2v_tail, i2v_loop)")


def test_cli_refuses_v2v_on_the_high_compression_preset_in_one_line(tmp_path):
    proc = run_cli("generate", "--preset", "high-compression", "--prompt", "a cat", "--cond-type", "v2v_head",
                   "--ref", str(tmp_path / "clip.mp4"), "--output-dir", str(tmp_path))
    assert proc.returncode == 2
    assert "cond type v2v_head cannot run on preset high-compression" in proc.stderr.strip().splitlines()[-1]


def test_dc_ae_preset_loads_an_official_layout_file(tmp_path):
    reference = load_tiny_dc_ae(FIXTURES)
    preset = load_preset("tiny-random-hc")
    preset.vae = reference.config
    save_file(load_file(str(FIXTURES / "dc_ae_tiny_weights.safetensors")), str(tmp_path / "dc_ae.safetensors"))
    vae = load_vae_weights(tmp_path / "dc_ae.safetensors", preset, torch.float32, "cpu")
    latent = load_file(str(FIXTURES / "dc_ae_tiny_io.safetensors"))["video.latent"].clone()
    with torch.no_grad():
        assert torch.equal(vae.decode(latent), reference.decode(latent))


def test_a_preset_cannot_name_both_autoencoders(tmp_path):
    text = (REPO / "presets" / "tiny-random-hc.toml").read_text()
    broken = tmp_path / "both.toml"
    broken.write_text(text + "\n[vae]\nlatent_channels = 16\n")
    with pytest.raises(UserError, match=r"give \[vae\] or \[dc_ae\], not both"):
        load_preset(str(broken))
