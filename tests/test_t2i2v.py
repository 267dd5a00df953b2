"""Text -> image -> video: FLUX draws the first frame (saved as NNNN.png, named in the sidecar), the
video model starts on it; the settings, the CLI, the output folder and the app's toggle around it."""

import json

import av
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from conftest import run_cli
from opensora.errors import UserError
from opensora.generation_settings import GenerationRequest, resolve_settings
from opensora.io.outputs import OutputWriter
from opensora.io.reference import load_reference_frame
from opensora.loading import load_flux
from opensora.models.flux_image import flux_text_to_image
from opensora.presets import load_preset

PROMPT = "a red fox running through fresh snow"
SEED = 3


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / mse))


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) in [-1, 1] -> (H, W, 3) uint8, as the writer stores frames."""
    return ((image.clamp(-1, 1) + 1) / 2 * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def mp4_frames(path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


@pytest.fixture(scope="module")
def t2i2v_run(tmp_path_factory):
    """`generate --preset tiny-random --use-t2i2v` through the CLI, as a user runs it."""
    out = tmp_path_factory.mktemp("t2i2v")
    proc = run_cli("generate", "--preset", "tiny-random", "--use-t2i2v", "--prompt", PROMPT, "--seed", str(SEED),
                   "--num-frames", "9", "--output-dir", str(out))
    assert proc.returncode == 0, proc.stderr
    return out


def test_image_is_saved_beside_the_video_and_named_in_its_sidecar(t2i2v_run):
    sidecar = json.loads((t2i2v_run / "0000.json").read_text())
    assert sidecar["t2i2v_image"] == "0000.png" and (t2i2v_run / "0000.png").is_file()
    assert sidecar["use_t2i2v"] is True and sidecar["image_resolution"] == "tiny" and sidecar["cond_type"] == "t2v"
    preset = load_preset("tiny-random")
    height, width = preset.image_size("tiny", sidecar["aspect_ratio"])
    assert Image.open(t2i2v_run / "0000.png").size == (width, height)
    assert len(mp4_frames(t2i2v_run / "0000.mp4")) == 9


def test_image_is_flux_with_the_videos_seed_and_steps_on_the_prompt_without_suffixes(t2i2v_run, tiny_pipeline):
    sidecar = json.loads((t2i2v_run / "0000.json").read_text())
    assert sidecar["model_prompt"] != PROMPT  # the video's text has the FPS / motion sentences
    preset = tiny_pipeline.preset
    transformer, vae = load_flux(preset)
    with torch.no_grad():
        txt, vec = tiny_pipeline.text_encoder.encode([PROMPT])
    height, width = preset.image_size("tiny", sidecar["aspect_ratio"])
    expected = to_uint8(flux_text_to_image(transformer, vae, txt, vec, height, width, sidecar["num_steps"], seed=SEED))
    saved = np.asarray(Image.open(t2i2v_run / "0000.png").convert("RGB"))
    assert np.abs(saved.astype(int) - expected.astype(int)).max() <= 1


def test_videos_first_frame_is_the_image_through_the_vae(t2i2v_run, tiny_pipeline):
    """The tiny random VAE's own round trip is far from lossless (about 13 dB): the first frame must be as
    close to the image as that round trip is, and much closer to the round trip than a t2v video's is."""
    preset = tiny_pipeline.preset
    height, width = preset.image_size(preset.sampler.resolution, preset.sampler.aspect_ratio)
    image = np.asarray(Image.open(t2i2v_run / "0000.png").convert("RGB"))
    reference = load_reference_frame(t2i2v_run / "0000.png", "first", height, width)
    with torch.no_grad():
        latent = tiny_pipeline.vae.encode(reference[None], sample=True, generator=torch.Generator().manual_seed(SEED))
        round_trip = to_uint8(tiny_pipeline.vae.decode(latent)[0, :, 0])
        plain = tiny_pipeline(PROMPT, seed=SEED, num_frames=9, use_t2i2v=False).videos[0]
    first = mp4_frames(t2i2v_run / "0000.mp4")[0]
    round_trip_psnr = psnr(round_trip, image)
    assert psnr(first, image) >= min(round_trip_psnr - 1.0, 30.0), (psnr(first, image), round_trip_psnr)
    assert psnr(first, round_trip) >= psnr(to_uint8(plain[:, 0]), round_trip) + 3.0


def test_result_carries_one_image_per_sample_and_seeds_follow_the_samples(tiny_pipeline):
    result = tiny_pipeline(PROMPT, seed=SEED, num_frames=5, num_samples=2, use_t2i2v=True, num_steps=2)
    assert len(result.images) == len(result.videos) == 2
    first, second = result.images
    assert first.shape == (3, 32, 64) and not torch.equal(first, second)  # sample k draws with seed + k
    again = tiny_pipeline(PROMPT, seed=SEED + 1, num_frames=5, use_t2i2v=True, num_steps=2)
    assert torch.equal(again.images[0], second)  # sample 1 alone, as its sidecar's seed remakes it
    assert tiny_pipeline(PROMPT, seed=SEED, num_frames=5, num_steps=2).images == []  # plain t2v: no image


def test_resolve_refuses_t2i2v_where_it_cannot_run(tmp_path):
    tiny = load_preset("tiny-random")
    with pytest.raises(UserError, match="preset demo has no FLUX files.*presets with FLUX: .*tiny-random"):
        resolve_settings(GenerationRequest(prompt="a cat", use_t2i2v=True), load_preset("demo"))
    image = tmp_path / "first.png"
    Image.new("RGB", (64, 32)).save(image)
    with pytest.raises(UserError, match="works with cond type t2v only, not i2v_head"):
        resolve_settings(GenerationRequest(prompt="a cat", use_t2i2v=True, cond_type="i2v_head",
                                           reference=[str(image)]), tiny)
    with pytest.raises(UserError, match="image_resolution '768px' is not a bucket table of preset tiny-random; "
                                        "allowed: tiny"):
        resolve_settings(GenerationRequest(prompt="a cat", use_t2i2v=True, image_resolution="768px"), tiny)
    with pytest.raises(UserError, match="image_resolution 'tiny' only applies to text -> image -> video"):
        resolve_settings(GenerationRequest(prompt="a cat", image_resolution="tiny"), tiny)


def test_t2i2v_presets_default_to_it_and_a_reused_sidecar_keeps_the_choice():
    official = load_preset("opensora-v2-t2i2v-256px")
    assert official.flux.transformer == "flux1-dev.safetensors"
    assert official.flux.autoencoder == "flux1-dev-ae.safetensors" and official.flux.image_resolution == "768px"
    on = resolve_settings(GenerationRequest(prompt="a cat", seed=1), official)
    assert on.use_t2i2v and on.image_resolution == "768px" and (on.height, on.width) == (192, 336)
    off = resolve_settings(GenerationRequest(prompt="a cat", seed=1, use_t2i2v=False), official)
    assert not off.use_t2i2v and off.image_resolution is None
    for settings in (on, off):
        reused = resolve_settings(GenerationRequest.from_sidecar(settings.to_dict()), official)
        assert reused == settings
    assert not resolve_settings(GenerationRequest(prompt="a cat"), load_preset("tiny-random")).use_t2i2v


def test_cli_refuses_t2i2v_without_flux_in_one_line(tmp_path):
    proc = run_cli("generate", "--preset", "demo", "--use-t2i2v", "--prompt", "a red circle",
                   "--output-dir", str(tmp_path))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].endswith(
        "preset demo has no FLUX files, so text -> image -> video is not available; presets with FLUX: "
        "high-compression, opensora-v2-t2i2v-256px, opensora-v2-t2i2v-768px, tiny-random, tiny-random-hc")
    assert not list(tmp_path.glob("*.mp4"))


def test_missing_flux_files_are_named_with_the_download_command(tmp_path):
    with pytest.raises(UserError, match=r"flux1-dev\.safetensors \(flux\)[\s\S]*flux1-dev-ae\.safetensors \(flux_ae\)"
                                        r"[\s\S]*black-forest-labs/FLUX\.1-dev"):
        load_flux(load_preset("opensora-v2-t2i2v-256px"), tmp_path)


# ------------------------------------------------------------------------------ output folder
def test_writer_keeps_image_sidecar_and_video_one_unit(tmp_path, monkeypatch):
    writer = OutputWriter(tmp_path)
    video, image = torch.zeros(3, 5, 32, 64), torch.full((3, 32, 64), 0.5)
    path = writer.write(video, 8, {"prompt": "x", "seed": 1}, text="x", seed=1, image=image)
    assert json.loads(path.with_suffix(".json").read_text())["t2i2v_image"] == "0000.png"
    assert np.asarray(Image.open(tmp_path / "0000.png")).min() == round(0.75 * 255)

    import opensora.io.outputs as outputs

    def broken_encoder(*args, **kwargs):
        raise RuntimeError("encoder crashed")

    monkeypatch.setattr(outputs, "encode_video", broken_encoder)
    with pytest.raises(RuntimeError):
        writer.write(video, 8, {"prompt": "y", "seed": 2}, text="y", seed=2, image=image)
    # the second unit left nothing behind: no 0001.png, sidecar, temp file or claim
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != ".results.csv.lock") == [
        "0000.json", "0000.mp4", "0000.png", "results.csv"]


def test_sweep_removes_the_image_of_a_writer_that_died_before_its_video(tmp_path):
    (tmp_path / ".0003.claim").write_text("999999999")  # no such process
    (tmp_path / "0003.png").write_bytes(b"png")
    (tmp_path / "0003.json").write_text("{}")
    (tmp_path / ".0003.png.tmp-abc.png").write_bytes(b"half")
    OutputWriter(tmp_path).sweep()
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------ app
def test_app_toggle_shows_where_flux_is_and_follows_the_preset_default(tmp_path):
    from app.tab_t2v import t2i2v_update
    from app.config import AppConfig

    config = AppConfig(ckpt_dir=tmp_path, output_dir=tmp_path / "out", runs_dir=tmp_path / "runs")
    assert t2i2v_update("tiny-random", config) == {"__type__": "update", "visible": True, "value": False}
    assert t2i2v_update("tiny-random", config, True)["value"] is True  # reuse of a T2I2V video
    assert t2i2v_update("demo", config, True) == {"__type__": "update", "visible": False, "value": False}
    assert not t2i2v_update("opensora-v2-t2i2v-256px", config)["visible"]  # FLUX files missing
    for name in ("flux1-dev.safetensors", "flux1-dev-ae.safetensors"):
        save_file({"w": torch.zeros(1)}, str(tmp_path / name))
    assert t2i2v_update("opensora-v2-t2i2v-256px", config) == {"__type__": "update", "visible": True, "value": True}
