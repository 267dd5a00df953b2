"""Hardening of the trainer's run folder (issue #27): one trainer per folder (a lock with its pid,
stale locks seen as such), and `--resume auto` past a truncated newest checkpoint."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.training_runs import RunSpec, TrainingRuns
from conftest import REPO
from opensora.errors import UserError
from training.cli import main as training_main
from training.run_lock import LOCK_FILE, lock_holder
from training.demo.shapes_dataset import write_dataset


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """README-like example data: 9-frame shapes clips (the tiny preset's buckets take them)."""
    return write_dataset(tmp_path_factory.mktemp("data") / "shapes", num_clips=8, seed=3, num_frames=9)


def finetune(data: Path, out: Path, *extra: str) -> int:
    return training_main(["finetune", "--config", "tiny", "--data", str(data), "--output-dir", str(out),
                          "--threads", "1", "--no-tensorboard", "--checkpoint-every", "2", "--keep-last", "3", *extra])


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def status(out: Path) -> dict:
    return json.loads((out / "status.json").read_text())


def wait_for(probe, what: str, timeout: float = 180):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_resume_auto_skips_a_truncated_newest_checkpoint_and_keeps_the_step(data, tmp_path, capsys):
    """#27.4: a truncated lora/optimizer file in the newest checkpoint gives a warning naming it and
    the run continues from the newest checkpoint that reads; when none reads, exit 2 with a message
    and status.json keeps the run's real step (was: SafetensorError traceback, step 0)."""
    out = tmp_path / "run"
    assert finetune(data, out, "--steps", "4") == 0  # checkpoints at steps 2 and 4
    truncate(out / "checkpoints" / "step-000004" / "lora.safetensors")
    assert finetune(data, out, "--steps", "6", "--resume", "auto") == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["resumed_from"] == 2 and summary["step"] == 6
    log_text = (out / "train.log").read_text()
    assert "skipping step-000004" in log_text and "lora.safetensors" in log_text
    assert (status(out)["state"], status(out)["step"]) == ("finished", 6)

    truncate(out / "checkpoints" / "step-000006" / "optimizer.safetensors")
    assert finetune(data, out, "--steps", "8", "--resume", "auto") == 0
    assert json.loads((out / "summary.json").read_text())["resumed_from"] == 4  # step-4 was saved again
    assert "skipping step-000006" in (out / "train.log").read_text()

    for folder in (out / "checkpoints").glob("step-*"):
        truncate(folder / "optimizer.safetensors")
    capsys.readouterr()
    assert finetune(data, out, "--steps", "10", "--resume", "auto") == 2
    err = capsys.readouterr().err
    assert "no checkpoint" in err and "reads" in err and "Traceback" not in err
    assert (status(out)["state"], status(out)["step"]) == ("failed", 8)


def test_a_second_trainer_on_a_locked_run_folder_is_refused_and_a_restarted_app_can_stop_it(data, tmp_path, capsys):
    """#27.3: the live trainer holds its folder's lock. A second trainer (CLI) is refused with the
    first one's pid and leaves status.json alone; an app restarted meanwhile (a new TrainingRuns
    without the process handle) shows the run as running, refuses Resume naming the pid, and
    its Stop stops the trainer."""
    runs_dir = tmp_path / "runs"
    first_app = TrainingRuns(runs_dir)
    first_app.start(RunSpec(name="long", preset="tiny-random", data=str(data), lora_rank=8, steps=100_000,
                            lr=1e-3, config="tiny"))
    run_dir = runs_dir / "long"
    try:
        pid = wait_for(lambda: lock_holder(run_dir), "the trainer to take its lock")
        wait_for(lambda: (run_dir / "status.json").is_file() and status(run_dir)["pid"] == pid, "its status")

        assert finetune(data, run_dir, "--steps", "100000", "--resume", "auto") == 2
        err = capsys.readouterr().err
        assert f"in use by another trainer (pid {pid})" in err
        assert status(run_dir)["pid"] == pid and status(run_dir)["state"] == "running"

        restarted = TrainingRuns(runs_dir)
        assert restarted.running_name() == "long"
        assert restarted.view("long").state == "running"
        with pytest.raises(UserError, match=f"still training \\(trainer pid {pid}\\)"):
            restarted.resume("long")
        assert restarted.stop("long")
        wait_for(lambda: lock_holder(run_dir) is None and status(run_dir)["state"] == "stopped", "the stop")
        assert restarted.view("long").state == "stopped" and restarted.running_name() is None
    finally:
        first_app.stop_all(wait_s=10)


def test_a_killed_trainers_lock_is_stale(tmp_path):
    """#27.3: kill -9 leaves trainer.lock behind; it is not taken for a live trainer, and the run
    with its last status "running" shows as interrupted (Resume allowed), not as running."""
    run_dir = tmp_path / "runs" / "killed"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from training.run_lock import RunLock; "
         "RunLock(sys.argv[1]).acquire(); print('locked', flush=True); time.sleep(120)", str(run_dir)],
        cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    assert lock_holder(run_dir) == holder.pid
    (run_dir / "status.json").write_text(json.dumps({"state": "running", "step": 7, "total_steps": 9,
                                                     "pid": holder.pid}))
    assert TrainingRuns(tmp_path / "runs").view("killed").state == "running"
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert (run_dir / LOCK_FILE).is_file() and lock_holder(run_dir) is None
    view = TrainingRuns(tmp_path / "runs").view("killed")
    assert view.state == "interrupted" and "Resume" in view.message and view.step == 7


def test_an_open_sora_1_2_preset_is_refused_before_any_load(tmp_path, capsys):
    """The trainer builds an MMDiT: a 1.2 preset (STDiT3) is one clear line and exit 2, not a traceback."""
    code = training_main(["finetune", "--preset", "tiny-random-v1-2", "--data", str(REPO / "examples/prompts.csv"),
                          "--output-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and "tiny-random-v1-2 is Open-Sora 1.2" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()
