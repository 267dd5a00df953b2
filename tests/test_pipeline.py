"""The pipeline object on the tiny random preset: shapes, seeds, callback, cancel, references."""

import threading

import numpy as np
import pytest
import torch
from PIL import Image

from opensora.errors import UserError
from opensora.io.video import write_video
from opensora.sampling.denoise import GenerationCancelled


def test_t2v_shapes_and_settings(tiny_pipeline):
    result = tiny_pipeline("a cat", num_frames=9, aspect_ratio="16:9", seed=3, num_steps=3)
    video = result.videos[0]
    assert video.shape == (3, 9, 32, 64)
    assert video.min() >= -1 and video.max() <= 1
    settings = result.settings[0]
    assert settings["model_prompt"] == "a cat. 8 FPS. 4 motion score."
    assert settings["seed"] == 3 and settings["num_steps"] == 3 and settings["cond_type"] == "t2v"


def test_same_seed_same_video_and_samples_differ(tiny_pipeline):
    a = tiny_pipeline("a dog", num_frames=5, seed=11, num_steps=2, num_samples=2)
    b = tiny_pipeline("a dog", num_frames=5, seed=11, num_steps=2)
    assert torch.equal(a.videos[0], b.videos[0])
    assert not torch.equal(a.videos[0], a.videos[1])
    assert [s["seed"] for s in a.settings] == [11, 12]
    c = tiny_pipeline("a dog", num_frames=5, seed=11, noise_seed=99, num_steps=2)
    assert c.settings[0]["noise_seed"] == 99 and not torch.equal(a.videos[0], c.videos[0])


def test_each_sample_of_a_batch_is_remade_by_its_own_seed(tiny_pipeline, tmp_path):
    """#29.6: sample 2 of a multi-sample run is reproduced by the seed its sidecar records."""
    image = _png(tmp_path / "ref.png", (200, 40, 40))
    batch = tiny_pipeline("a dog", cond_type="i2v_head", reference=image, num_frames=5, seed=20, num_steps=2,
                          num_samples=3)
    for k in (1, 2):
        assert batch.settings[k]["seed"] == 20 + k and batch.settings[k]["num_samples"] == 1
        alone = tiny_pipeline("a dog", cond_type="i2v_head", reference=image, num_frames=5,
                              seed=batch.settings[k]["seed"], num_steps=2)
        assert torch.equal(alone.videos[0], batch.videos[k])


def test_random_seed_is_reported(tiny_pipeline):
    result = tiny_pipeline("a dog", num_frames=1, num_steps=1)
    assert isinstance(result.settings[0]["seed"], int)
    assert result.videos[0].shape[1] == 1


def test_step_callback_reports_each_step(tiny_pipeline):
    seen = []
    tiny_pipeline("a cat", num_frames=9, num_steps=4, seed=0, callback=lambda i, n, x: seen.append((i, n, tuple(x.shape))))
    assert seen == [(i, 4, (1, 16, 3, 4, 8)) for i in range(4)]


def test_cancel_stops_between_steps(tiny_pipeline):
    cancel = threading.Event()
    seen = []

    def callback(i, n, x):
        seen.append(i)
        if i == 1:
            cancel.set()

    with pytest.raises(GenerationCancelled):
        tiny_pipeline("a cat", num_frames=9, num_steps=6, seed=0, callback=callback, cancel_event=cancel)
    assert seen == [0, 1]


def _png(path, color, size=(90, 50)):
    Image.new("RGB", size, color).save(path)
    return str(path)


def test_i2v_types_with_images(tiny_pipeline, tmp_path):
    head, tail = _png(tmp_path / "head.png", (250, 10, 10)), _png(tmp_path / "tail.png", (10, 10, 250))
    for cond_type, ref in (("i2v_head", head), ("i2v_tail", tail), ("i2v_loop", f"{head};{tail}")):
        result = tiny_pipeline("a cat", cond_type=cond_type, reference=ref, num_frames=9, seed=1, num_steps=2)
        assert result.videos[0].shape == (3, 9, 32, 64)
        assert result.settings[0]["cond_type"] == cond_type
    # The reference latent is written back into frame 0 for i2v_head.
    result = tiny_pipeline("a cat", cond_type="i2v_head", reference=head, num_frames=9, seed=1, num_steps=2)
    reference = tiny_pipeline._encode_references("i2v_head", head, 32, 64, torch.Generator().manual_seed(1))
    assert torch.allclose(result.latents[0][:, 0], reference[0][:, 0])


def test_v2v_head_and_half_alias(tiny_pipeline, tmp_path):
    frames = np.zeros((40, 32, 64, 3), np.uint8)
    frames[:, :, :, 1] = np.linspace(0, 255, 40, dtype=np.uint8)[:, None, None]
    path = tmp_path / "clip.mp4"
    write_video(path, frames, fps=8)
    result = tiny_pipeline("a cat", cond_type="v2v_head", reference=str(path), num_frames=37, seed=2, num_steps=1)
    assert result.videos[0].shape[1] == 37
    with pytest.raises(UserError, match="at least 65 frames"):
        tiny_pipeline("a cat", cond_type="v2v_head_half", reference=str(path), num_frames=129, num_steps=1)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"prompt": "  "}, "prompt is empty"),
        ({"num_frames": 10}, r"num_frames 10 .*4k\+1"),
        ({"aspect_ratio": "5:1"}, r"aspect ratio '5:1'.*allowed"),
        ({"cond_type": "i2v_middle"}, r"unknown cond type 'i2v_middle'"),
        ({"cond_type": "i2v_head"}, r"needs a reference"),
        ({"height": 33, "width": 64}, r"height 33 .*multiples of 16"),
        ({"width": 64}, r"width was given alone: give both height and width"),
        ({"prompt": "x" * 2001}, r"2001 characters; the limit is 2000"),
        ({"num_samples": 0}, r"num_samples 0 is out of range"),
        ({"num_steps": 0}, r"num_steps 0 is out of range"),
        ({"motion_score": 20}, r"motion score .*1-15.*20"),
        ({"guidance": -1.0}, r"guidance -1.0 is out of range"),
    ],
)
def test_bad_input_messages(tiny_pipeline, kwargs, message):
    kwargs = {"prompt": "a cat", "num_steps": 1, **kwargs}
    with pytest.raises(UserError, match=message):
        tiny_pipeline(kwargs.pop("prompt"), **kwargs)


def test_corrupt_reference_image(tiny_pipeline, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    with pytest.raises(UserError, match="broken.png"):
        tiny_pipeline("a cat", cond_type="i2v_head", reference=str(bad), num_steps=1)
