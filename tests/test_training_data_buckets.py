"""Bucket tables (presets/buckets-*.toml) and assigning samples to buckets."""

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from opensora.errors import UserError
from training.buckets import (
    assign_buckets,
    bucket_config_from_dict,
    find_bucket,
    load_bucket_config,
    no_bucket_reason,
    usable_frames,
)

PRESETS = Path(__file__).resolve().parent.parent / "presets"
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "opensora_v2"


@pytest.fixture(scope="module")
def demo():
    return load_bucket_config(PRESETS / "buckets-demo.toml")


@pytest.fixture(scope="module")
def official_256px():
    return load_bucket_config(PRESETS / "buckets-256px.toml")


def _table(**frames_entry):
    entry = {"num_frames": 33, "batch_size": 4, **frames_entry}
    return {
        "resolutions": [
            {"name": "x", "aspect_ratios": [{"name": "1:1", "height": 64, "width": 64}], "frames": [entry]}
        ]
    }


def test_presets_load(demo, official_256px):
    assert demo.fps == 12
    assert [b.key for b in demo.buckets()][:3] == ["128px/1:1/1f", "128px/1:1/17f", "128px/1:1/33f"]
    res = official_256px.resolutions[0]
    assert res.name == "256px" and official_256px.fps == 24
    assert res.frames[0].num_frames == 1 and res.frames[0].batch_size == 45
    assert res.frames[-1].num_frames == 129
    for b in official_256px.buckets():
        assert b.num_frames % 4 == 1 and 0.95 < b.height * b.width / 256**2 < 1.05
    official = json.loads((FIXTURES / "aspect_buckets.json").read_text())["buckets"]["256px"]["training"]
    assert {a.name: [a.height, a.width] for a in res.aspect_ratios} == official


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"num_frames": 32}, "4k+1"),
        ({"num_frames": 133}, "[1, 129]"),
        ({"batch_size": 0}, "batch_size is 0"),
        ({"keep_prob": 1.5}, "keep_prob is 1.5; must be in (0, 1]"),
        ({"batchsize": 2}, "unknown keys ['batchsize']"),
    ],
)
def test_bad_frame_entries_name_value_and_range(change, message):
    with pytest.raises(UserError) as err:
        bucket_config_from_dict(_table(**change), source="t.toml")
    assert message in str(err.value) and "t.toml" in str(err.value)


def test_bad_sizes_and_top_level():
    data = _table()
    data["resolutions"][0]["aspect_ratios"][0]["height"] = 100
    with pytest.raises(UserError, match="height is 100; must be a positive multiple of 16"):
        bucket_config_from_dict(data)
    with pytest.raises(UserError, match="fps is -1"):
        bucket_config_from_dict({**_table(), "fps": -1})
    with pytest.raises(UserError, match="at least one"):
        bucket_config_from_dict({"resolutions": []})


def test_bad_toml_file(tmp_path):
    bad = tmp_path / "b.toml"
    bad.write_text("fps = = 3")
    with pytest.raises(UserError, match="not valid TOML"):
        load_bucket_config(bad)
    with pytest.raises(UserError, match="not found"):
        load_bucket_config(tmp_path / "missing.toml")


def test_aspect_ratio_nearest_in_log_space(demo):
    assert find_bucket(demo, 33, 128, 128, 12).key == "128px/1:1/33f"
    assert find_bucket(demo, 33, 96, 160, 12).key == "128px/16:9/33f"
    assert find_bucket(demo, 33, 1920, 1080, 12).aspect_ratio == "9:16"
    # 1:2 is closer to 9:16 (log distance 0.09) than to 1:1 (0.69).
    assert find_bucket(demo, 33, 400, 200, 12).aspect_ratio == "9:16"
    # 4:3 lies between 1:1 (0.29) and 16:9 (0.32 away): 1:1 wins.
    assert find_bucket(demo, 33, 300, 350, 12).aspect_ratio == "1:1"


def test_largest_frame_count_that_fits(demo):
    assert find_bucket(demo, 32, 128, 128, 12).num_frames == 17
    assert find_bucket(demo, 17, 128, 128, 12).num_frames == 17
    assert find_bucket(demo, 10, 128, 128, 12).num_frames == 1  # too short: one frame of it
    assert find_bucket(demo, 1, 128, 128, 120).num_frames == 1  # an image
    # 65 frames at 24 fps give 33 frames at the config's 12 fps; 64 give only 32.
    assert usable_frames(65, 24, 12) == 33 and usable_frames(64, 24, 12) == 32
    assert find_bucket(demo, 65, 128, 128, 24).num_frames == 33
    assert find_bucket(demo, 64, 128, 128, 24).num_frames == 17
    assert usable_frames(40, 10, 12) == 40  # slower sources are never upsampled


def test_no_bucket_without_images(demo):
    videos_only = demo.without_image_buckets()
    assert all(b.num_frames > 1 for b in videos_only.buckets())
    assert find_bucket(videos_only, 10, 128, 128, 12) is None
    reason = no_bucket_reason(videos_only, 10, 128, 128, 12)
    assert "10 frames" in reason and "[17, 33]" in reason
    assert find_bucket(videos_only, 1, 128, 128, 120) is None


def test_resolution_threshold_and_largest_first(official_256px):
    assert find_bucket(official_256px, 200, 1080, 1920, 30).key == "256px/16:9/129f"
    assert find_bucket(official_256px, 50, 240, 240, 24).key == "256px/1:1/49f"  # 0.88 of 256^2
    assert find_bucket(official_256px, 50, 128, 128, 24) is None
    assert "too small" in no_bucket_reason(official_256px, 50, 128, 128, 24)

    two = bucket_config_from_dict(
        {
            "resolutions": [
                {"name": "small", "aspect_ratios": [{"name": "1:1", "height": 64, "width": 64}],
                 "frames": [{"num_frames": 9, "batch_size": 8}]},
                {"name": "big", "aspect_ratios": [{"name": "1:1", "height": 128, "width": 128}],
                 "frames": [{"num_frames": 1, "batch_size": 4}]},
            ]
        }
    )
    assert [r.name for r in two.resolutions] == ["big", "small"]
    assert find_bucket(two, 1, 512, 512, 1).key == "big/1:1/1f"
    assert find_bucket(two, 20, 512, 512, 24).key == "small/1:1/9f"  # "big" has no video bucket
    assert find_bucket(two, 20, 64, 64, 24).key == "small/1:1/9f"


@dataclass
class _Sample:
    num_frames: int
    height: int
    width: int
    fps: float


def test_assign_buckets_counts_and_logs(demo, caplog):
    samples = [_Sample(33, 128, 128, 12), _Sample(20, 96, 176, 12), _Sample(5, 128, 128, 12), _Sample(1, 64, 64, 1)]
    assignment = assign_buckets(samples, demo.without_image_buckets(), describe=lambda s: f"sample {s.num_frames}f")
    assert [b.key if b else None for b in assignment.buckets] == ["128px/1:1/33f", "128px/16:9/17f", None, None]
    assert [i for i, _ in assignment.unassigned] == [2, 3]
    assert assignment.counts() == {"128px/1:1/33f": 1, "128px/16:9/17f": 1}
    assert "skipping sample 5f" in caplog.text and "2 of 4 samples fit no bucket" in caplog.text
