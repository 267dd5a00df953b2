"""`python -m opensora generate` under torchrun: two gloo ranks on this CPU write exactly one mp4 +
sidecar + results row, the video one process makes; with several GPUs the command re-runs itself
under torchrun."""

import csv
import json
import os
import subprocess
import sys

import av
import numpy as np
import pytest

from conftest import REPO, run_cli
from opensora.cli import main

# 1:1 at the tiny preset is 48x48: 3 x 3 tokens per latent frame, 27 image tokens (not divisible by 2).
JOB = ["generate", "--preset", "tiny-random", "--prompt", "a red fox", "--num-steps", "3", "--seed", "5",
       "--aspect-ratio", "1:1", "--num-sample", "2"]


def frames(path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


@pytest.mark.slow
def test_two_ranks_write_each_video_once_and_as_one_process_does(tmp_path):
    two, one = tmp_path / "two", tmp_path / "one"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "opensora",
         *JOB, "--output-dir", str(two)],
        cwd=REPO, capture_output=True, text=True, timeout=420, env=env,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    single = run_cli(*JOB, "--output-dir", str(one), "--no-parallel", env=env)
    assert single.returncode == 0, single.stderr[-3000:]

    files = sorted(p.name for p in two.iterdir() if not p.name.startswith("."))  # not the writer's lock file
    assert files == ["0000.json", "0000.mp4", "0001.json", "0001.mp4", "results.csv"]
    assert proc.stdout.split() == [str(two / "0000.mp4"), str(two / "0001.mp4")]  # printed by rank 0 only
    with open(two / "results.csv", newline="") as f:
        assert [row["path"] for row in csv.DictReader(f)] == ["0000.mp4", "0001.mp4"]
    for name in ("0000", "0001"):
        sidecar = json.loads((two / f"{name}.json").read_text())
        assert sidecar["runtime"]["sequence_parallel"] == 2
        assert json.loads((one / f"{name}.json").read_text())["runtime"]["sequence_parallel"] == 1
        parallel, alone = frames(two / f"{name}.mp4"), frames(one / f"{name}.mp4")
        assert parallel.shape == alone.shape == (9, 48, 48, 3)
        assert np.array_equal(parallel, alone)
    assert not np.array_equal(frames(two / "0000.mp4"), frames(two / "0001.mp4"))  # seed + k


def test_several_gpus_rerun_the_command_under_torchrun(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr("opensora.parallel.process_group.should_relaunch", lambda no_parallel: 0 if no_parallel else 4)
    monkeypatch.setattr(subprocess, "call", lambda argv: calls.append(argv) or 0)
    argv = ["generate", "--preset", "tiny-random", "--prompt", "a cat", "--output-dir", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", ["opensora", *argv])
    assert main(argv) == 0
    assert calls == [[sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4",
                      "-m", "opensora", *argv]]
    assert not tmp_path.exists() or not any(tmp_path.iterdir())  # this process only checked the job


def test_bad_input_fails_before_torchrun_starts(monkeypatch, tmp_path, capsys):
    calls = []
    monkeypatch.setattr("opensora.parallel.process_group.should_relaunch", lambda no_parallel: 4)
    monkeypatch.setattr(subprocess, "call", lambda argv: calls.append(argv) or 0)
    assert main(["generate", "--preset", "tiny-random", "--prompt", "a cat", "--num-frames", "10",
                 "--output-dir", str(tmp_path)]) == 2
    assert "num_frames 10 is not allowed" in capsys.readouterr().err and not calls
