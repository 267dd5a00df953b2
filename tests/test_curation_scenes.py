"""Stage scenes: PySceneDetect finds exactly the hard cuts made in synthetic videos (none inside a
moving scene), cut clips decode to the scene's frames, and the length rules drop / split scenes."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from opensora.errors import UserError
from test_curation_media import COLOURS, FPS, write_scenes
from training.curation import probe, scenes
from training.curation.probe import ProbeConfig
from training.curation.runner import run_stage
from training.curation.scenes import ScenesConfig
from training.curation.table import read_csv


def probed(tmp_path: Path, *videos: Path) -> Path:
    listing = tmp_path / "list.csv"
    listing.write_text("path\n" + "".join(f"{v}\n" for v in videos))
    out = tmp_path / "probe.csv"
    run_stage(probe.STAGE, ProbeConfig(), listing, out, progress=False)
    return out


def frame_means(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24").mean(axis=(0, 1)) for f in container.decode(video=0)])


@pytest.fixture(scope="module")
def scene_run(tmp_path_factory):
    """Two videos: four scenes (three cuts, the camera moving in each), and one long still shot."""
    root = tmp_path_factory.mktemp("scenes")
    cuts = write_scenes(root / "four.mp4", [20, 18, 24, 16], speeds=[1, 2, 0.5, 3])
    write_scenes(root / "one.mp4", [30], speeds=[0], seed=9)
    config = ScenesConfig(clips_dir=str(root / "clips"))
    summary = run_stage(scenes.STAGE, config, probed(root, root / "four.mp4", root / "one.mp4"), root / "scenes.csv",
                        progress=False)
    return root, cuts, summary, read_csv(root / "scenes.csv")[1]


def test_scenes_found_are_exactly_the_cuts_made(scene_run):
    root, cuts, summary, rows = scene_run
    assert cuts == [20, 38, 62]
    four = [r for r in rows if r["source"].endswith("four.mp4")]
    one = [r for r in rows if r["source"].endswith("one.mp4")]
    starts = [round(float(r["start_s"]) * FPS) for r in four]
    ends = [round(float(r["end_s"]) * FPS) for r in four]
    assert starts == [0, *cuts] and ends == [*cuts, 78]
    assert [int(r["num_frames"]) for r in four] == [20, 18, 24, 16]
    assert len(one) == 1 and one[0]["num_frames"] == "30"
    assert summary.counts["scenes found"] == 5


def test_cut_clips_hold_their_scene_and_nothing_else(scene_run):
    root, _, _, rows = scene_run
    four = [r for r in rows if r["source"].endswith("four.mp4")]
    for index, row in enumerate(four):
        clip = Path(row["path"])
        assert clip.parent == root / "clips" and clip.is_file()
        means = frame_means(clip)
        assert len(means) == int(row["num_frames"])
        # Every frame carries its scene's tint: the brightest channel is the scene colour's.
        assert set(means.argmax(axis=1)) == {int(np.argmax(COLOURS[index]))}
        assert row["start_frame"] == row["end_frame"] == ""  # a clip is a whole file to the trainer


def test_rerunning_scenes_on_its_own_output_changes_nothing(scene_run, tmp_path):
    root, _, _, rows = scene_run
    summary = run_stage(scenes.STAGE, ScenesConfig(clips_dir=str(tmp_path / "clips")), root / "scenes.csv",
                        tmp_path / "again.csv", progress=False)
    assert read_csv(tmp_path / "again.csv")[1] == rows
    assert summary.rows_out == len(rows) and not (tmp_path / "clips").exists()


def test_short_scenes_are_dropped_and_long_ones_split(tmp_path):
    write_scenes(tmp_path / "v.mp4", [16, 40])  # 1.33 s and 3.33 s at 12 fps
    config = ScenesConfig(cut=False, min_seconds=1.5, max_seconds=1.5)
    summary = run_stage(scenes.STAGE, config, probed(tmp_path, tmp_path / "v.mp4"), tmp_path / "s.csv", progress=False)
    rows = read_csv(tmp_path / "s.csv")[1]
    # 40 frames > 18 (1.5 s): three equal parts, every one within [min, max].
    assert [(int(r["start_frame"]), int(r["end_frame"])) for r in rows] == [(16, 29), (29, 43), (43, 56)]
    assert all(r["path"] == str(tmp_path / "v.mp4") for r in rows)
    assert summary.counts == {"scenes found": 2, "short scenes dropped": 1, "long scenes split": 1}


def test_scene_settings_are_checked():
    with pytest.raises(UserError, match="--max-seconds is 0.5; must be 0 .* or >= --min-seconds"):
        ScenesConfig(cut=False, min_seconds=1.0, max_seconds=0.5)
    with pytest.raises(UserError, match="--adaptive-threshold is 0"):
        ScenesConfig(cut=False, adaptive_threshold=0)
