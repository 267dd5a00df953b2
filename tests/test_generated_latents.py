"""The MMDiT's own latents of rendered clips, and decoder training on them (`generate-latents`,
`train-vae --generated-latents`)."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from opensora.errors import UserError
from opensora.pipeline import OpenSoraPipeline
from opensora.presets import load_preset
from training.demo.generated_latents import generate
from training.demo.latent_pairs import load_pairs

REPO = Path(__file__).resolve().parents[1]
FRAMES = 9  # rendered clip length of the pairs here (the demo uses 33): the same code, a third of the work


@pytest.fixture(scope="module")
def tiny_pipe():
    return OpenSoraPipeline.from_preset("tiny-random")


def test_pairs_keep_their_clip_spec_start_step_and_latent_shape(tiny_pipe, tmp_path):
    path = generate(tiny_pipe, tmp_path / "pairs.safetensors", num=2, seed=5, first_step=1, last_step=3,
                    num_frames=FRAMES)
    pairs = load_pairs(path)
    config = tiny_pipe.preset.vae
    assert len(pairs) == 2
    for pair in pairs:
        assert 1 <= pair.start_step <= 3
        height, width = pair.spec.height // config.spatial_compression, pair.spec.width // config.spatial_compression
        frames = (FRAMES - 1) // config.time_compression + 1
        assert pair.latent.shape == (config.latent_channels, frames, height, width)
        assert torch.isfinite(pair.latent).all()
    again = generate(tiny_pipe, tmp_path / "again.safetensors", num=2, seed=5, first_step=1, last_step=3,
                     num_frames=FRAMES)
    assert all(torch.equal(a, b) for a, b in zip(load_file(str(path)).values(), load_file(str(again)).values()))
    other = load_pairs(generate(tiny_pipe, tmp_path / "other.safetensors", num=1, seed=6, first_step=1, last_step=3,
                                num_frames=FRAMES))
    assert other[0].spec != pairs[0].spec


@pytest.mark.slow  # two spawned processes, each loading a pipeline
def test_workers_write_the_same_pairs_as_one_process(tiny_pipe, tmp_path):
    from training.demo.generated_latents import generate_with_workers

    one = generate(tiny_pipe, tmp_path / "one.safetensors", num=3, seed=4, first_step=1, last_step=3,
                   num_frames=FRAMES)
    two = generate_with_workers(tiny_pipe.preset, "cpu", 2, tmp_path / "two.safetensors", num=3, seed=4,
                                first_step=1, last_step=3, num_frames=FRAMES)
    assert [pair.spec for pair in load_pairs(one)] == [pair.spec for pair in load_pairs(two)]
    for a, b in zip(load_pairs(one), load_pairs(two)):
        assert a.start_step == b.start_step
        torch.testing.assert_close(a.latent, b.latent, rtol=1e-4, atol=1e-4)  # thread counts differ


def test_bad_start_steps_and_a_missing_file_say_what_is_allowed(tiny_pipe, tmp_path):
    from training.demo.generated_latents import generate_with_workers

    with pytest.raises(UserError, match="workers is 0; allowed: 1-64"):
        generate_with_workers(tiny_pipe.preset, "cpu", 0, tmp_path / "x.safetensors", num=1, seed=0,
                              first_step=1, last_step=1)
    with pytest.raises(UserError, match="start steps are 3..1; allowed: 0 <= first <= last <= 3"):
        generate(tiny_pipe, tmp_path / "p.safetensors", num=1, seed=0, first_step=3, last_step=1)
    with pytest.raises(UserError, match="no generated latents at .*missing.safetensors"):
        load_pairs(tmp_path / "missing.safetensors")


def test_decoder_trains_on_generated_latents_and_the_encoder_stays(tiny_pipe, tmp_path):
    from training.cli import main
    from training.demo.vae_config import VAETrainConfig
    from training.demo.vae_trainer import train_vae

    pairs = generate(tiny_pipe, tmp_path / "pairs.safetensors", num=2, seed=1, first_step=2, last_step=3,
                     num_frames=FRAMES)
    preset = tmp_path / "tiny.toml"
    preset.write_text((REPO / "presets" / "tiny-random.toml").read_text().replace("norm_num_groups = 4", "norm_num_groups = 1"))
    small = ["--batch-size", "1", "--crop-frames", "5", "--crop-size", "16", "--eval-clips", "1", "--eval-frames", "1",
             "--no-update-preset", "--image-fraction", "0"]
    first = tmp_path / "vae.safetensors"
    assert main(["train-vae", "--preset", str(preset), "--out", str(first), "--work-dir", str(tmp_path / "a"),
                 "--steps", "1", *small]) == 0
    tuned = tmp_path / "decoder.safetensors"
    assert main(["train-vae", "--preset", str(preset), "--out", str(tuned), "--work-dir", str(tmp_path / "b"),
                 "--steps", "2", "--init", str(first), "--train", "decoder", "--generated-latents", str(pairs), *small]) == 0
    before, after = load_file(str(first)), load_file(str(tuned))
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith(("encoder.", "quant_conv.")))
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("decoder."))

    vae = load_preset(str(preset)).vae
    with pytest.raises(UserError, match="generated_latents trains the decoder .* it needs train 'decoder'"):
        train_vae(vae, VAETrainConfig(steps=1, generated_latents=str(pairs)), tmp_path / "v.safetensors", tmp_path,
                  resume=False)
    with pytest.raises(UserError, match="crop_size 20 and crop_frames 5 must fit whole latent cells"):
        train_vae(vae, VAETrainConfig(steps=1, train="decoder", init=str(first), crop_size=20, crop_frames=5,
                                      generated_latents=str(pairs)), tmp_path / "v.safetensors", tmp_path, resume=False)


def test_pair_batches_crop_latents_and_pixels_alike(tiny_pipe, tmp_path):
    from training.demo.vae_batches import PairBatch, RenderedBatches, VAEBatch
    from training.demo.vae_config import VAETrainConfig

    pairs = load_pairs(generate(tiny_pipe, tmp_path / "pairs.safetensors", num=2, seed=2, first_step=3, last_step=3,
                                num_frames=FRAMES))
    config = tiny_pipe.preset.vae
    cfg = VAETrainConfig(steps=4, batch_size=2, crop_frames=5, crop_size=32, seed=4)
    batches = RenderedBatches(cfg, config, pairs)
    pair_batch, own_batch = batches[0], batches[1]
    assert isinstance(pair_batch, PairBatch) and isinstance(own_batch, VAEBatch)
    assert pair_batch.latent.shape == (2, config.latent_channels, 2, 32 // config.spatial_compression, 32 // config.spatial_compression)
    assert pair_batch.video.shape == (2, 3, 5, 32, 32)
    assert pair_batch.video.min() >= -1.0 and pair_batch.video.max() <= 1.0


def test_sampling_from_a_start_step_runs_only_the_rest_of_the_schedule(tiny_pipe):
    from opensora.sampling.denoise import GuidanceOptions

    pipe, steps = tiny_pipe, tiny_pipe.preset.sampler.num_steps
    shape = (1, pipe.preset.mmdit.latent_channels, 3, 4, 8)
    txt, y_vec = pipe.text_encoder.encode(["a red circle", "", ""])
    options = GuidanceOptions(5.0, 1.0, False, False, False)
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    seen = {}
    for start in (0, steps - 1):
        calls = []
        seen[start] = pipe.sample(noise, txt, y_vec, "t2v", [[]], options, steps, start_step=start,
                                  callback=lambda i, n, x: calls.append((i, n)))
        assert calls == [(i, steps) for i in range(start, steps)]
    assert not torch.equal(seen[0], seen[steps - 1])
    assert len(pipe.schedule(shape, steps).sigmas) == steps + 1
