"""opensora.io.reference: Open-Sora resize_crop placement, value range, error messages."""

import numpy as np
import pytest
from PIL import Image

from opensora.errors import UserError
from opensora.io.reference import load_reference, load_reference_frame, resize_crop
from opensora.io.video import write_video


def three_band_image(width: int, height: int) -> Image.Image:
    """Wide image: red | green | blue vertical bands of equal width."""
    array = np.zeros((height, width, 3), np.uint8)
    third = width // 3
    array[:, :third, 0] = 255
    array[:, third : 2 * third, 1] = 255
    array[:, 2 * third :, 2] = 255
    return Image.fromarray(array)


def test_image_with_other_aspect_is_filled_and_centre_cropped(tmp_path):
    path = tmp_path / "wide.png"
    three_band_image(300, 100).save(path)  # 3:1 into a square: only the green band survives
    x = load_reference(path, height=64, width=64)
    assert x.shape == (3, 1, 64, 64)
    assert x.dtype.is_floating_point
    assert x.min() >= -1 and x.max() <= 1
    centre = x[:, 0, 8:56, 8:56]
    assert centre[1].min() > 0.95  # green on
    assert centre[0].max() < -0.95 and centre[2].max() < -0.95


def test_resize_crop_matches_hand_computed_geometry():
    # 200x100 (WxH) into 50x50: scale by 0.5 on height -> 100x50, crop columns 25..75.
    array = np.zeros((100, 200, 3), np.uint8)
    array[:, 100:] = 255  # right half white
    out = np.asarray(resize_crop(Image.fromarray(array), 50, 50))
    assert out.shape == (50, 50, 3)
    assert out[:, :23].max() < 10  # left of centre: black
    assert out[:, 27:].min() > 245  # right of centre: white


def test_tall_image_crops_rows(tmp_path):
    path = tmp_path / "tall.png"
    array = np.zeros((400, 100, 3), np.uint8)
    array[:120] = 255  # white top strip lies above the centred crop (source rows 150..250)
    Image.fromarray(array).save(path)
    x = load_reference(path, height=32, width=32)
    assert x.shape == (3, 1, 32, 32)
    assert x.max() < -0.95


def test_rgba_and_grayscale_images(tmp_path):
    rgba = np.zeros((20, 30, 4), np.uint8)
    rgba[..., 3] = 0  # fully transparent -> white background
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    Image.fromarray(np.full((20, 30), 128, np.uint8), "L").save(tmp_path / "gray.jpg")

    white = load_reference(tmp_path / "alpha.png", 16, 16)
    assert white.shape == (3, 1, 16, 16) and white.min() > 0.99
    gray = load_reference(tmp_path / "gray.jpg", 16, 24)
    assert gray.shape == (3, 1, 16, 24)
    assert gray.std(dim=0).max() < 0.02 and abs(gray.mean().item()) < 0.05


def test_video_reference_and_first_last_frames(tmp_path):
    path = tmp_path / "ref.mp4"
    frames = np.zeros((9, 32, 48, 3), np.uint8)
    frames[:, :, :, 0] = np.arange(9, dtype=np.uint8)[:, None, None] * 30  # red ramps over time
    write_video(path, frames, fps=8)

    all_frames = load_reference(path, 16, 16)
    assert all_frames.shape == (3, 9, 16, 16)
    first_five = load_reference(path, 16, 16, num_frames=5)
    assert first_five.shape == (3, 5, 16, 16)

    first = load_reference_frame(path, "first", 16, 16)
    last = load_reference_frame(path, "last", 16, 16)
    assert first.shape == last.shape == (3, 1, 16, 16)
    red = lambda t: (t[0].mean().item() + 1) / 2 * 255  # noqa: E731
    assert red(first) == pytest.approx(0, abs=6)
    assert red(last) == pytest.approx(240, abs=6)


def test_image_reference_frame_is_the_image(tmp_path):
    path = tmp_path / "img.png"
    three_band_image(90, 30).save(path)
    for which in ("first", "last"):
        assert load_reference_frame(path, which, 24, 40).shape == (3, 1, 24, 40)
    with pytest.raises(UserError, match="'middle'"):
        load_reference_frame(path, "middle", 24, 40)


@pytest.mark.parametrize("name, content", [
    ("missing.png", None),
    ("empty.png", b""),
    ("corrupt.png", b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8),
    ("corrupt.jpg", bytes(range(256)) * 8),
    ("corrupt.mp4", bytes(range(256)) * 8),
])
def test_unreadable_reference_raises_user_error(tmp_path, name, content):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(UserError) as excinfo:
        load_reference(path, 32, 32)
    assert str(path) in str(excinfo.value)


def test_unsupported_extension_lists_accepted(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    with pytest.raises(UserError) as excinfo:
        load_reference(path, 32, 32)
    message = str(excinfo.value)
    assert str(path) in message and ".png" in message and ".mp4" in message
