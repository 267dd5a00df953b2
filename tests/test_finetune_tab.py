"""The fine-tune tab's parts without a browser (issue #29; the Chromium checks are in
test_finetune_tab_browser.py): the status after Resume, the loss plot's SVG, the log tail, the
dataset folders the tab accepts."""

import json
import re
import sys
import time
from pathlib import Path

import pytest

from app.loss_plot import loss_svg, nice_ticks, smoothed
from app.training_runs import RunSpec, TrainingRuns, check_dataset_location, compact_log
from opensora.errors import UserError

REPO = Path(__file__).resolve().parent.parent
FAKE_TRAINER = (sys.executable, str(REPO / "tests" / "fake_trainer.py"))


def wait_for(probe, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_status_right_after_resume_is_starting_not_the_old_stopped(tmp_path, monkeypatch):
    """#29.3: right after Resume, status.json still says "stopped" (the new trainer has not written
    yet); the view must say "starting" and stay active (the poll goes on) until "finished"."""
    monkeypatch.setenv("FAKE_STEP_S", "0.05")
    runs = TrainingRuns(tmp_path / "runs", command=(sys.executable, "-c", "import time; time.sleep(1.5)"))
    run_dir = tmp_path / "runs" / "r"
    run_dir.mkdir(parents=True)
    (run_dir / "app_launch.json").write_text(json.dumps({"args": ["--steps", "4"]}))
    (run_dir / "status.json").write_text(json.dumps({"state": "stopped", "step": 2, "total_steps": 4, "pid": 1}))
    runs.resume("r")  # a trainer that has not written its status yet
    view = runs.view("r")
    assert view.state == "starting" and view.active and view.step == 2
    wait_for(lambda: runs.running_name() is None)
    assert runs.view("r").state == "exited"  # it ended without a status of its own: said so

    runs = TrainingRuns(tmp_path / "runs", command=FAKE_TRAINER)
    data = tmp_path / "data.csv"
    data.write_text("path,text\n")
    runs.start(RunSpec(name="real", preset="tiny-random", data=str(data), steps=40))
    wait_for(lambda: runs.view("real").step >= 2)
    assert runs.stop("real")
    wait_for(lambda: runs.view("real").state == "stopped" and runs.running_name() is None)
    runs.resume("real")
    states, deadline = [], time.monotonic() + 60
    while time.monotonic() < deadline and (runs.running_name() is not None or states[-1:] not in (["finished"], ["exited"])):
        states.append(runs.view("real").state)
        time.sleep(0.02)
    assert "stopped" not in states and states[-1] == "finished", states


def test_loss_plot_svg_has_numeric_round_ticks_and_a_smoothed_line():
    """#29.4: numeric axes (round ticks, ascending), raw points and one smoothed polyline; a falling
    loss is drawn falling (pixel y grows downwards)."""
    steps = list(range(1, 61))
    losses = [1.59 - 0.63 * i / 59 + (0.05 if i % 3 == 0 else -0.05) for i in range(60)]
    svg = loss_svg(steps, losses)
    x_labels = [float(v) for v in re.findall(r'text-anchor="middle" fill="currentColor">([-\d.]+)</text>', svg)]
    y_labels = [float(v) for v in re.findall(r'text-anchor="end" fill="currentColor">([-\d.]+)</text>', svg)]
    assert x_labels == [0, 20, 40, 60]
    assert y_labels[0] <= min(losses) and y_labels[-1] >= max(losses) and 3 <= len(y_labels) <= 8
    gaps = {round(b - a, 9) for a, b in zip(y_labels, y_labels[1:])}
    assert len(gaps) == 1 and gaps.pop() in (0.1, 0.2, 0.5)  # evenly spaced round values
    assert svg.count("<circle") == 60 and svg.count("<polyline") == 1
    points = re.search(r'points="([^"]+)"', svg).group(1).split()
    assert float(points[-1].split(",")[1]) > float(points[0].split(",")[1])
    assert nice_ticks(0.96, 1.59) == [0.8, 1.0, 1.2, 1.4, 1.6]
    assert smoothed([1.0, 1.0, 1.0], 0.9) == pytest.approx([1.0, 1.0, 1.0])  # debiased: no pull to 0
    assert "no steps yet" in loss_svg([], [])
    assert loss_svg(list(range(5000)), [1.0] * 5000).count("<circle") <= 400  # long runs are thinned


def test_log_tail_folds_checkpoint_lines():
    """#29.9: a run of "saved checkpoint" lines shows as its newest one; the date and logger go."""
    text = "\n".join([
        "2026-12-01 21:33:08,560 INFO training.trainer: lora training of preset demo",
        *[f"2026-12-01 21:33:{i:02d},100 INFO training.checkpointing: saved checkpoint step-{i:06d}"
          for i in range(10, 60, 10)],
        "2026-12-01 21:34:00,100 WARNING training.trainer: something to see",
    ])
    lines = compact_log(text).splitlines()
    assert lines == ["21:33:08 lora training of preset demo", "21:33:50 saved checkpoint step-000050",
                     "21:34:00 WARNING something to see"]


def test_dataset_location_is_checked_without_saying_whether_a_path_exists(tmp_path):
    """#27.6: inside the runs/data folders is fine (also through a relative path); outside,
    whether the path exists or not and also through a symlink from inside, one message."""
    runs, data = tmp_path / "runs", tmp_path / "data"
    (data / "clips").mkdir(parents=True)
    runs.mkdir()
    check_dataset_location(str(data / "clips"), [runs, data])
    (data / "escape").symlink_to("/etc")
    messages = set()
    for path in ("/etc/passwd", "/nope/x.csv", str(data / "escape" / "passwd"), str(data / ".." / "x.csv")):
        with pytest.raises(UserError) as err:
            check_dataset_location(path, [runs, data])
        messages.add(str(err.value).replace(repr(path), "PATH"))
    assert len(messages) == 1 and "outside the folders the app trains from" in messages.pop()
