"""Resuming a stage: a run killed with kill -9 and started again ends with every row exactly once;
a kill between a row's CSV append and its journal line is cut back; a partial output is never
resumed under other settings or another input; the local pool gives the same file as one worker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO
from openai_stub_server import OpenAIStubServer, StubReply
from opensora.errors import UserError
from opensora.io.video import write_video
from test_curation_media import FPS, write_scenes
from training.curation import caption, motion, scenes
from training.curation.caption import CaptionConfig
from training.curation.motion import MotionConfig
from training.curation.resume import journal_path
from training.curation.runner import run_stage
from training.curation.scenes import ScenesConfig
from training.curation.table import read_csv

ROWS = 8
STAGE_COMMAND = (
    "import argparse, sys\n"
    "from opensora import subcommands\n"
    "from training.commands.prepare import CAPTION\n"
    "sys.exit(subcommands.run_command(subcommands.build_parser('prepare', '', {'prepare-caption': (CAPTION, '')}),"
    " {'prepare-caption': (CAPTION, '')}, ['prepare-caption', *sys.argv[1:]]))\n"
)


def journal_lines(output: Path) -> int:
    path = journal_path(output)
    return path.read_text().count("\n") - 1 if path.exists() else 0


def test_kill_9_mid_run_then_restart_gives_every_row_exactly_once(tmp_path):
    clip = tmp_path / "clip.mp4"
    write_video(clip, np.full((6, 32, 48, 3), 128, np.uint8), FPS)
    listing = tmp_path / "in.csv"
    listing.write_text("path,text,num_frames,id\n" + "".join(f"{clip},,6,{i}\n" for i in range(ROWS)))
    output = tmp_path / "out.csv"
    with OpenAIStubServer() as stub:
        stub.set_default(StubReply.slow(0.2, "a grey picture"))  # each row takes 0.2 s
        args = [str(listing), str(output), "--caption-base-url", stub.base_url, "--caption-model", "stub-vision",
                "--caption-frames", "1", "--no-progress"]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        process = subprocess.Popen([sys.executable, "-c", STAGE_COMMAND, *args], cwd=REPO, env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while journal_lines(output) < 3 and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        process.stderr.close()
        done_before = journal_lines(output)
        assert 3 <= done_before < ROWS

        summary = run_stage(caption.STAGE, CaptionConfig(base_url=stub.base_url, model="stub-vision", frames=1),
                            listing, output, progress=False)
        requests = len(stub.chat_requests)
    rows = read_csv(output)[1]
    assert [r["id"] for r in rows] == [str(i) for i in range(ROWS)]  # each once, in input order
    assert all(r["text"] == "a grey picture" for r in rows)
    assert summary.resumed == done_before and summary.kept == ROWS
    assert ROWS <= requests <= ROWS + 1  # at most the row in flight at the kill is asked twice


@pytest.fixture(scope="module")
def three_videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    for index, lengths in enumerate(([16, 20], [18], [15, 17, 16])):
        write_scenes(root / f"v{index}.mp4", lengths, seed=index)
    listing = root / "in.csv"
    listing.write_text("path,num_frames,fps\n" + "".join(
        f"{root / f'v{i}.mp4'},{n},{FPS}\n" for i, n in enumerate((36, 18, 48))))
    return listing


def test_rows_appended_before_a_kill_but_not_journaled_are_cut_back(three_videos, tmp_path):
    config = ScenesConfig(cut=False)
    complete = tmp_path / "complete.csv"
    run_stage(scenes.STAGE, config, three_videos, complete, progress=False)
    expected = complete.read_text()
    assert len(read_csv(complete)[1]) == 6

    # The state a kill leaves between appending v2's three rows and writing its journal line,
    # plus the torn start of a row that never finished.
    crashed = tmp_path / "crashed.csv"
    crashed.write_text(expected + 'x,"half a ro')
    lines = journal_path(complete).read_text().splitlines(keepends=True)
    journal_path(crashed).write_text("".join(lines[:-1]) + '{"key": "torn')

    summary = run_stage(scenes.STAGE, config, three_videos, crashed, progress=False)
    assert crashed.read_text() == expected
    assert (summary.resumed, summary.rows_out, summary.counts["scenes found"]) == (2, 6, 6)
    assert journal_path(crashed).read_text() == "".join(lines)


def test_a_partial_output_is_not_resumed_under_other_settings_or_input(three_videos, tmp_path):
    output = tmp_path / "out.csv"
    run_stage(scenes.STAGE, ScenesConfig(cut=False), three_videos, output, progress=False)
    with pytest.raises(UserError, match=r"other settings: min_seconds 1.0 -> 2.0.*--overwrite"):
        run_stage(scenes.STAGE, ScenesConfig(cut=False, min_seconds=2.0), three_videos, output, progress=False)
    swapped = tmp_path / "swapped.csv"
    lines = three_videos.read_text().splitlines()
    swapped.write_text("\n".join([lines[0], lines[2], lines[1], lines[3]]) + "\n")
    with pytest.raises(UserError, match="input row 1 is .*v1.mp4.* did .*v0.mp4.*--overwrite"):
        run_stage(scenes.STAGE, ScenesConfig(cut=False), swapped, output, progress=False)
    swapped.write_text("\n".join(lines[:3]) + "\n")
    with pytest.raises(UserError, match="records 3 finished rows but the input has 2"):
        run_stage(scenes.STAGE, ScenesConfig(cut=False), swapped, output, progress=False)
    journal_path(output).unlink()
    with pytest.raises(UserError, match="has no progress file"):
        run_stage(scenes.STAGE, ScenesConfig(cut=False), three_videos, output, progress=False)
    summary = run_stage(scenes.STAGE, ScenesConfig(cut=False, min_seconds=2.0), three_videos, output,
                        overwrite=True, progress=False)
    assert summary.resumed == 0 and summary.counts["short scenes dropped"] == 6


def test_two_pool_workers_write_the_same_file_as_one(three_videos, tmp_path):
    cut = tmp_path / "cut.csv"
    run_stage(scenes.STAGE, ScenesConfig(clips_dir=str(tmp_path / "clips")), three_videos, cut, progress=False)
    run_stage(motion.STAGE, MotionConfig(samples=4), cut, tmp_path / "one.csv", progress=False)
    run_stage(motion.STAGE, MotionConfig(samples=4), cut, tmp_path / "two.csv", workers=2, progress=False)
    assert (tmp_path / "one.csv").read_text() == (tmp_path / "two.csv").read_text()
    assert len(read_csv(tmp_path / "two.csv")[1]) == 6
