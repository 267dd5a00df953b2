"""Stage motion: VMAF motion and optical flow order still < slow < fast, the VMAF frame
difference matches FFmpeg's own vmafmotion filter, and the range filter drops clips."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest

from test_curation_media import HEIGHT, WIDTH, moving_scene, write_scenes
from training.curation import motion
from training.curation.motion import MotionConfig, mean_abs_difference, motion_row, vmaf_blur
from training.curation.runner import run_stage
from training.curation.table import read_csv


def clip_row(path, num_frames: int) -> dict:
    return {"path": str(path), "num_frames": str(num_frames), "text": ""}


@pytest.fixture(scope="module")
def speed_clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("motion")
    rows = []
    for name, speed in (("still", 0), ("slow", 1), ("fast", 4)):
        write_scenes(root / f"{name}.mp4", [24], speeds=[speed], seed=3)
        rows.append(clip_row(root / f"{name}.mp4", 24))
    return root, rows


def test_motion_and_flow_order_still_slow_fast(speed_clips):
    _, rows = speed_clips
    scores = [motion_row(row, MotionConfig()).rows[0] for row in rows]
    vmaf = [float(s["motion"]) for s in scores]
    flow = [float(s["flow"]) for s in scores]
    assert vmaf[0] < 0.1 and 0.5 < vmaf[1] < vmaf[2], vmaf  # a still shot moves only by coding noise
    assert flow[0] < 0.1 and 0.5 < flow[1] < flow[2], flow
    # The trainer conditions on motion_score: the same VMAF number.
    assert [s["motion_score"] for s in scores] == [s["motion"] for s in scores]
    # Flow is in pixels per frame at a 256 px short side: a 4 px/frame pan of a 64 px high clip is 16.
    assert flow[2] == pytest.approx(4 * 256 / HEIGHT, rel=0.15)


def test_vmaf_frame_difference_matches_ffmpeg_vmafmotion():
    """FFmpeg's vmafmotion filter (in PyAV's FFmpeg) reports the blurred-luma SAD to the previous
    frame per frame; ours must agree to its printed precision (two decimals, integer maths)."""
    frames = moving_scene((200, 200, 200), 8, 3.0, seed=5)
    lumas = [np.ascontiguousarray(f[..., 1]) for f in frames]  # a grey picture: any channel is the luma
    graph = av.filter.Graph()
    source = graph.add_buffer(width=WIDTH, height=HEIGHT, format="gray", time_base=Fraction(1, 12))
    vmaf = graph.add("vmafmotion")
    sink = graph.add("buffersink")
    source.link_to(vmaf)
    vmaf.link_to(sink)
    graph.configure()
    reference = []
    for index, y in enumerate(lumas):
        frame = av.VideoFrame.from_ndarray(y, format="gray")
        frame.pts = index
        graph.push(frame)
        reference.append(float(graph.pull().metadata["lavfi.vmafmotion.score"]))
    blurred = [vmaf_blur(y) for y in lumas]
    ours = [0.0] + [mean_abs_difference(blurred[i], blurred[i - 1]) for i in range(1, len(lumas))]
    assert reference[1] > 1  # the clip really moves
    assert ours == pytest.approx(reference, abs=0.02)


def test_motion_range_drops_clips_outside_and_keeps_the_rest(speed_clips, tmp_path):
    root, rows = speed_clips
    listing = tmp_path / "clips.csv"
    listing.write_text("path,text,num_frames\n" + "".join(f"{r['path']},,24\n" for r in rows))
    summary = run_stage(motion.STAGE, MotionConfig(min_motion=0.2), listing, tmp_path / "m.csv", progress=False)
    kept = read_csv(tmp_path / "m.csv")[1]
    assert [r["path"].rsplit("/", 1)[1] for r in kept] == ["slow.mp4", "fast.mp4"]
    assert summary.dropped == {"motion out of range": 1}
