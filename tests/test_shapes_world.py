"""The procedural shapes-world renderer, its captions, and the dataset writer."""

import csv

import numpy as np
import pytest

from opensora.io.video import probe_video
from training.cli import main as training_main
from training.demo.shapes_dataset import write_dataset
from training.demo.shapes_world import (
    BACKGROUNDS,
    COLOURS,
    HELD_OUT,
    MOTIONS,
    SHAPES,
    caption,
    demo_frame_sizes,
    is_held_out,
    render_clip,
    sample_spec,
)

MOTION_WORDS = {
    "left": ("left",),
    "right": ("right",),
    "up": ("up", "rise", "rising", "climb"),
    "down": ("down", "fall", "sink", "descend"),
    "still": ("still", "static", "stationary", "not moving", "motionless", "in place", "does not move"),
}


def _specs(count: int, seed: int = 0, **kwargs):
    rng = np.random.default_rng(seed)
    return [sample_spec(rng, **kwargs) for _ in range(count)]


def _coverage(frames: np.ndarray, spec) -> np.ndarray:
    """Per-pixel object coverage in [0, 1], recovered from the anti-aliased blend."""
    bg = np.array(BACKGROUNDS[spec.background], dtype=np.float32)
    fg = np.array(COLOURS[spec.colour], dtype=np.float32)
    span = fg - bg
    channel = int(np.argmax(np.abs(span)))  # the channel with the most contrast
    return (frames[..., channel].astype(np.float32) - bg[channel]) / span[channel]


@pytest.fixture(scope="module")
def rendered():
    # Every shape x motion x background at least once, across all aspect ratios.
    specs = _specs(60, seed=1)
    return [(spec, render_clip(spec)) for spec in specs]


def test_clip_shape_dtype_and_sizes(rendered):
    sizes = demo_frame_sizes()
    assert sizes == {"1:1": (128, 128), "16:9": (96, 160), "9:16": (160, 96)}
    for spec, frames in rendered:
        assert frames.dtype == np.uint8
        assert frames.shape == (spec.num_frames, spec.height, spec.width, 3)
        assert (spec.height, spec.width) == sizes[spec.aspect_ratio]
    assert {spec.aspect_ratio for spec, _ in rendered} == set(sizes)
    assert {spec.motion for spec, _ in rendered} == set(MOTIONS)
    assert {spec.shape for spec, _ in rendered} == set(SHAPES)


def test_colour_exact_at_centroid_and_background_exact(rendered):
    for spec, frames in rendered:
        bg = np.array(BACKGROUNDS[spec.background], dtype=np.uint8)
        for frame in frames[[0, len(frames) // 2, -1]]:
            mask = np.any(frame != bg, axis=-1)
            ys, xs = np.nonzero(mask)
            cy, cx = int(round(ys.mean())), int(round(xs.mean()))
            assert tuple(frame[cy, cx]) == COLOURS[spec.colour], spec
            assert (frame[0, 0] == bg).all()


def test_object_fully_inside_every_frame(rendered):
    for spec, frames in rendered:
        bg = np.array(BACKGROUNDS[spec.background], dtype=np.uint8)
        mask = np.any(frames != bg, axis=-1)  # (T, H, W)
        assert mask.any(axis=(1, 2)).all(), "object missing from a frame"
        border = mask[:, 0, :].any() or mask[:, -1, :].any() or mask[:, :, 0].any() or mask[:, :, -1].any()
        assert not border, f"object touches the frame edge: {spec}"


def test_motion_displacement_and_constant_area(rendered):
    for spec, frames in rendered:
        cover = _coverage(frames, spec)
        area = cover.sum(axis=(1, 2))
        assert area.max() / area.min() < 1.02, spec
        ys, xs = np.mgrid[0 : spec.height, 0 : spec.width]
        cx = (cover * xs).sum(axis=(1, 2)) / area
        cy = (cover * ys).sum(axis=(1, 2)) / area
        move_x, move_y = cx[-1] - cx[0], cy[-1] - cy[0]
        if spec.motion == "still":
            assert abs(move_x) < 0.05 and abs(move_y) < 0.05
            continue
        along, across, extent = {
            "left": (-move_x, move_y, spec.width),
            "right": (move_x, move_y, spec.width),
            "up": (-move_y, move_x, spec.height),
            "down": (move_y, move_x, spec.height),
        }[spec.motion]
        assert along >= extent / 3 - 0.5, spec
        assert abs(across) < 0.05
        steps = np.diff(cx if spec.motion in ("left", "right") else cy)
        assert steps.std() < 0.1 * abs(steps.mean()), "speed is not steady"


def test_held_out_never_sampled_and_held_out_mode():
    assert len(HELD_OUT) == 8
    for values, field in ((COLOURS, "colour"), (SHAPES, "shape"), (MOTIONS, "motion"), (BACKGROUNDS, "background")):
        assert {getattr(c, field) for c in HELD_OUT} == set(values)
    specs = _specs(2000, seed=2, num_frames=9)
    assert not any(is_held_out(s.combo) for s in specs)
    assert len({s.combo for s in specs}) > 150  # the rest of the 232 combinations do appear
    held = _specs(50, seed=3, held_out=True, num_frames=9)
    assert all(is_held_out(s.combo) for s in held)


def test_sampling_and_rendering_are_deterministic():
    assert _specs(5, seed=7) == _specs(5, seed=7)
    spec = _specs(1, seed=7)[0]
    np.testing.assert_array_equal(render_clip(spec), render_clip(spec))
    assert caption(spec, np.random.default_rng(1)) == caption(spec, np.random.default_rng(1))


def test_images_stand_still():
    for spec in _specs(30, seed=4, num_frames=1):
        assert spec.motion == "still" and render_clip(spec).shape[0] == 1


def test_captions_name_colour_shape_and_motion():
    rng = np.random.default_rng(5)
    named_background = 0
    for spec in _specs(300, seed=6):
        text = caption(spec, rng).lower()
        assert spec.colour in text and spec.shape in text, text
        assert any(word in text for word in MOTION_WORDS[spec.motion]), text
        wrong_background = "black" if spec.background == "gray" else "gray"
        assert wrong_background not in text
        named_background += ("black" in text) or ("gray" in text) or ("grey" in text)
    assert named_background > 200  # most captions name the background; some leave it out


def test_captions_vary():
    spec = _specs(1, seed=8)[0]
    rng = np.random.default_rng(0)
    phrasings = {caption(spec, rng) for _ in range(200)}
    assert len(phrasings) > 40


def test_write_dataset_and_cli(tmp_path):
    csv_path = write_dataset(tmp_path / "a", num_clips=3, seed=0, num_images=2, num_frames=9)
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == ["path", "text", "num_frames", "height", "width", "fps", "aspect_ratio"]
        rows = list(reader)
    assert len(rows) == 5
    assert [r["path"].endswith(".png") for r in rows] == [False] * 3 + [True] * 2
    video = rows[0]
    info = probe_video(csv_path.parent / video["path"])
    assert (info.num_frames, info.height, info.width) == (9, int(video["height"]), int(video["width"]))
    assert float(video["aspect_ratio"]) == pytest.approx(info.height / info.width, abs=1e-3)
    assert (csv_path.parent / "specs.jsonl").read_text().count("\n") == 5

    out = tmp_path / "b"
    assert training_main(["render-shapes", "--out", str(out), "--num", "3", "--seed", "0",
                          "--num-images", "2", "--frames", "9"]) == 0
    assert (out / "data.csv").read_text() == csv_path.read_text()  # same seed, same dataset
