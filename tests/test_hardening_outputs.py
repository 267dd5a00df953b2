"""The output folder under two writers, a kill -9 and a full disk (issue #27 items 2, 6 and 7)."""

import csv
import json
import os
import signal
import stat
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from opensora.errors import UserError
from opensora.io.outputs import OutputWriter, list_outputs
from studio_app import REPO

WRITER_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    from opensora.io.outputs import OutputWriter

    folder, name, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    writer = OutputWriter(folder)
    video = np.full((2, 16, 16, 3), 90, np.uint8)
    for i in range(count):
        text = f"{name} {i}"
        writer.write(video, 8, {"prompt": text, "seed": i}, text=text, seed=i)
""")


def tiny_video() -> np.ndarray:
    return np.full((2, 16, 16, 3), 100, np.uint8)


def test_two_processes_writing_one_folder_lose_nothing(tmp_path):
    """#27.2: two writers x 40 videos: every index once, every row matches its sidecar."""
    out = tmp_path / "out"
    procs = [subprocess.Popen([sys.executable, "-c", WRITER_SCRIPT, str(out), name, "40"], cwd=REPO)
             for name in ("alpha", "beta")]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]

    videos = sorted(out.glob("*.mp4"))
    assert len(videos) == 80
    with open(out / "results.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 80 and len({r["index"] for r in rows}) == 80
    for row in rows:
        sidecar = json.loads((out / f"{int(row['index']):04d}.json").read_text())
        assert sidecar["prompt"] == row["text"] and str(sidecar["seed"]) == row["seed"]
        assert row["path"] == f"{int(row['index']):04d}.mp4"
    texts = {r["text"] for r in rows}
    assert texts == {f"{n} {i}" for n in ("alpha", "beta") for i in range(40)}
    assert not [p for p in os.listdir(out) if p.startswith(".") and not p.endswith(".lock")]


KILLED_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    import opensora.io.outputs as outputs

    real_publish = outputs.publish
    def publish_then_die(tmp, path):
        real_publish(tmp, path)
        if path.suffix == sys.argv[2]:
            os.kill(os.getpid(), signal.SIGKILL)
    outputs.publish = publish_then_die
    outputs.OutputWriter(sys.argv[1]).write(np.full((2, 16, 16, 3), 90, np.uint8), 8,
                                            {"prompt": "killed", "seed": 5}, text="killed", seed=5)
""")


@pytest.mark.parametrize("killed_after", [".json", ".mp4"])
def test_a_writer_killed_midway_leaves_nothing_a_sweep_does_not_mend(tmp_path, killed_after):
    """#27.7: kill -9 between the sidecar and the video, or after the video: the next writer
    removes the half unit (or restores its csv row) and the temp files."""
    out = tmp_path / "out"
    OutputWriter(out).write(tiny_video(), 8, {"prompt": "first", "seed": 1}, text="first", seed=1)
    proc = subprocess.run([sys.executable, "-c", KILLED_SCRIPT, str(out), killed_after], cwd=REPO)
    assert proc.returncode == -signal.SIGKILL
    assert any(name.startswith(".0001.") for name in os.listdir(out))  # the dead writer's claim

    writer = OutputWriter(out)
    writer.check_writable()  # sweeps
    hidden = [p for p in os.listdir(out) if p.startswith(".") and not p.endswith(".lock")]
    assert hidden == []
    entries = list_outputs(out)
    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    if killed_after == ".json":  # the sidecar made it, the video did not: both gone
        assert [e["index"] for e in entries] == [0] and not (out / "0001.json").exists()
        assert [r["index"] for r in rows] == ["0"]
    else:  # the video made it, its row did not: the row is restored from the sidecar
        assert [e["index"] for e in entries] == [1, 0]
        assert rows[-1] == {"index": "1", "text": "killed", "seed": "5", "path": "0001.mp4"}
    assert writer.write(tiny_video(), 8, {}, text="next", seed=2).name == f"000{2 if killed_after == '.mp4' else 1}.mp4"


def test_outputs_get_the_usual_file_mode(tmp_path):
    """#27.7: not the owner-only 0600 of a temp file."""
    old = os.umask(0o022)
    try:
        writer = OutputWriter(tmp_path)
        writer.write(tiny_video(), 8, {"prompt": "p"}, text="p", seed=0)
    finally:
        os.umask(old)
    for name in ("0000.mp4", "0000.json", "results.csv"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name


@pytest.fixture
def full_folder(tmp_path):
    """A 256 KiB tmpfs with only a few KiB left (needs mount rights; skipped otherwise)."""
    folder = tmp_path / "full"
    folder.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(folder)],
                      capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here")
    try:
        (folder / "filler").write_bytes(b"\0" * (256 - 12) * 1024)
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


def test_a_full_disk_is_a_clear_error_and_leaves_no_orphan(full_folder):
    """#27.7: ENOSPC while writing becomes one message naming the folder and its free space."""
    big = np.random.default_rng(0).integers(0, 255, (30, 64, 64, 3), dtype=np.uint8)  # noise: a large mp4
    with pytest.raises(UserError, match=rf"cannot write to the output folder {full_folder}: No space left on "
                                         r"device \(\d+ MB free\)"):
        OutputWriter(full_folder).write(big, 8, {"prompt": "p" * 20000}, text="p", seed=0)
    assert sorted(os.listdir(full_folder)) in (["filler"], [".results.csv.lock", "filler"])


def test_cli_output_folder_errors_come_before_the_model_loads(tmp_path, capsys):
    """#27.8: a file, or a folder that cannot be made, as --output-dir: exit 2 at once."""
    from opensora.cli import main

    (tmp_path / "afile").write_text("x")
    for folder, message in ((tmp_path / "afile", "is a file, not a folder"), ("/proc/outputs", "cannot write to")):
        code = main(["generate", "--preset", "tiny-random", "--prompt", "a cat", "--output-dir", str(folder)])
        err = capsys.readouterr().err
        assert code == 2 and message in err and "Traceback" not in err and "loading" not in err


def test_a_two_megabyte_prompt_is_refused_before_anything_runs(tmp_path, capsys):
    """#27.6: a clear limit instead of an 8 MB sidecar."""
    from opensora.cli import main

    code = main(["generate", "--preset", "tiny-random", "--prompt", "x" * 2_000_000, "--output-dir", str(tmp_path)])
    assert code == 2 and "the prompt has 2000000 characters; the limit is 2000" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
