"""Settings inside the mp4 (issue #31 item 5): every written video carries its sidecar's JSON in its
`comment` tag, read back through PyAV, by `python -m opensora info`, and from a lone .json."""

import json
import shutil

import av
import numpy as np
import pytest

from conftest import run_cli
from opensora.errors import UserError
from opensora.io.embedded_settings import SETTINGS_TAG, settings_from_file
from opensora.io.outputs import OutputWriter
from opensora.io.video import encode_video, read_metadata, read_video

SETTINGS = {"preset": "demo", "prompt": "a red circle — «moving» up\non two lines 🐱", "seed": 7, "num_frames": 9,
            "refine_api_key": "sk-secret", "loras": [{"path": "runs/a/lora.safetensors", "scale": 0.5}]}


def frames(count: int = 9) -> np.ndarray:
    ramp = np.linspace(0, 255, 32, dtype=np.uint8)
    return np.stack([np.stack([np.roll(ramp, t)[None].repeat(16, 0)] * 3, -1) for t in range(count)])


@pytest.fixture
def written(tmp_path):
    return OutputWriter(tmp_path / "out").write(frames(), 12, SETTINGS, text=SETTINGS["prompt"], seed=7)


def test_the_mp4_carries_exactly_its_sidecar_text_in_its_comment_tag(written):
    with av.open(str(written)) as container:  # PyAV itself, not our reader
        tag = container.metadata[SETTINGS_TAG]
    sidecar_text = written.with_suffix(".json").read_text(encoding="utf-8")
    assert tag == sidecar_text
    embedded = json.loads(tag)
    assert embedded["prompt"] == SETTINGS["prompt"] and embedded["loras"] == SETTINGS["loras"]
    assert "refine_api_key" not in embedded  # secrets stay out of the mp4 as out of the sidecar
    assert read_video(written)[0].shape == (9, 16, 32, 3)  # the tag does not disturb the video


def test_settings_from_the_mp4_alone_equal_the_sidecar(written, tmp_path):
    alone = tmp_path / "shared" / "video.mp4"  # copied without its sidecar, renamed
    alone.parent.mkdir()
    shutil.copy(written, alone)
    assert settings_from_file(alone) == json.loads(written.with_suffix(".json").read_text(encoding="utf-8"))
    assert settings_from_file(written.with_suffix(".json")) == settings_from_file(alone)


def test_encode_video_writes_any_tags_given(tmp_path):
    path = tmp_path / "tagged.mp4"
    encode_video(path, frames(3), 8, metadata={"comment": "x" * 100_000, "title": "t"})
    tags = read_metadata(path)
    assert tags["comment"] == "x" * 100_000 and tags["title"] == "t"


def test_videos_without_settings_are_clear_errors(tmp_path):
    plain = tmp_path / "plain.mp4"
    encode_video(plain, frames(3), 8)
    with pytest.raises(UserError, match="carries no Open-Sora Studio settings: its mp4 has no `comment` tag"):
        settings_from_file(plain)
    foreign = tmp_path / "camera.mp4"
    encode_video(foreign, frames(3), 8, metadata={"comment": "Shot on a phone"})
    with pytest.raises(UserError, match="carries no Open-Sora Studio settings: its `comment` tag is not JSON"):
        settings_from_file(foreign)
    other_json = tmp_path / "other.json"
    other_json.write_text('{"name": "a package.json"}')
    with pytest.raises(UserError, match="not an Open-Sora Studio settings object"):
        settings_from_file(other_json)
    fake = tmp_path / "fake.mp4"
    fake.write_text("not a video")
    with pytest.raises(UserError, match="not a readable video file"):
        settings_from_file(fake)
    with pytest.raises(UserError, match="neither a video nor a settings sidecar"):
        settings_from_file(tmp_path / "picture.png")


def test_info_command_prints_the_settings_as_json(written, tmp_path, capsys):
    from opensora.cli import main

    assert main(["info", str(written)]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads(written.with_suffix(".json").read_text(encoding="utf-8"))
    plain = tmp_path / "plain.mp4"
    encode_video(plain, frames(3), 8)
    assert main(["info", str(plain)]) == 2
    out = capsys.readouterr()
    assert out.out == "" and out.err.strip().splitlines() == [
        f"error: {plain} carries no Open-Sora Studio settings: its mp4 has no `comment` tag "
        "(videos written by this app or `python -m opensora generate` have one)"]
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    assert main(["info", str(text)]) == 2
    assert "notes.txt is neither a video nor a settings sidecar" in capsys.readouterr().err


def test_info_runs_as_a_command(written):
    """`python -m opensora info` as a user types it (one subprocess)."""
    result = run_cli("info", str(written))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["prompt"] == SETTINGS["prompt"]
