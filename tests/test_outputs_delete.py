"""Deleting a video from the output folder (issue #31 item 6): mp4 + sidecar + image + results.csv row
as one unit, beside a second process that keeps writing, after an error, and after a kill -9."""

import csv
import json
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from opensora.errors import UserError
from opensora.io.outputs import OutputWriter, list_outputs, save_last_frame
from studio_app import REPO

WRITER_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    from opensora.io.outputs import OutputWriter

    folder, count = sys.argv[1], int(sys.argv[2])
    writer = OutputWriter(folder)
    video = np.full((2, 16, 16, 3), 90, np.uint8)
    for i in range(count):
        writer.write(video, 8, {"prompt": f"writer {i}", "preset": "demo", "seed": i}, text=f"writer {i}", seed=i)
""")


def rows(folder) -> list[dict]:
    with open(folder / "results.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def write(writer: OutputWriter, text: str, seed: int = 0):
    return writer.write(np.full((2, 16, 16, 3), 100, np.uint8), 8, {"prompt": text, "preset": "demo", "seed": seed},
                        text=text, seed=seed)


def test_delete_removes_the_video_its_files_and_only_its_row(tmp_path):
    writer = OutputWriter(tmp_path / "out")
    paths = [write(writer, text, i) for i, text in enumerate(["first", 'a "quoted", comma', "multi\nline"])]
    (paths[1].with_suffix(".png")).write_bytes(b"png")  # a text -> image -> video first frame
    writer.delete(1)
    assert not paths[1].exists() and not paths[1].with_suffix(".json").exists()
    assert not paths[1].with_suffix(".png").exists()
    assert [(r["index"], r["text"]) for r in rows(writer.output_dir)] == [("0", "first"), ("2", "multi\nline")]
    assert [e["index"] for e in list_outputs(writer.output_dir)] == [2, 0]
    assert sorted(os.listdir(writer.output_dir)) == [".0001.deleted", ".results.csv.lock", "0000.json", "0000.mp4",
                                                    "0002.json", "0002.mp4", "results.csv"]
    with pytest.raises(UserError, match="there is no video 0001.mp4"):
        writer.delete(1)


def test_the_number_of_a_deleted_video_is_never_given_again(tmp_path):
    """A queue record or a shared link naming 0001.mp4 must not come to mean another video."""
    writer = OutputWriter(tmp_path / "out")
    write(writer, "a")
    write(writer, "b")
    writer.delete(1)
    assert write(writer, "c").name == "0002.mp4"
    writer.delete(2)
    writer.delete(0)
    assert write(writer, "d").name == "0003.mp4"
    assert [n for n in os.listdir(writer.output_dir) if n.endswith(".deleted")] == [".0002.deleted"]


def test_a_failed_csv_rewrite_puts_everything_back(tmp_path, monkeypatch):
    import opensora.io.outputs as outputs

    writer = OutputWriter(tmp_path / "out")
    path = write(writer, "kept")
    before = (writer.output_dir / "results.csv").read_bytes()

    def disk_full(*_):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(outputs, "atomic_write_bytes", disk_full)
    with pytest.raises(UserError, match="No space left on device"):
        writer.delete(0)
    assert path.exists() and path.with_suffix(".json").exists()
    assert (writer.output_dir / "results.csv").read_bytes() == before
    assert not [n for n in os.listdir(writer.output_dir) if ".tmp-" in n or n.endswith(".claim")]


def test_a_video_being_written_is_not_deleted(tmp_path):
    writer = OutputWriter(tmp_path / "out")
    write(writer, "busy")
    (writer.output_dir / ".0000.claim").write_text(str(os.getpid()))  # a live writer holds index 0
    with pytest.raises(UserError, match="0000.mp4 is being written or deleted right now"):
        writer.delete(0)
    assert (writer.output_dir / "0000.mp4").exists()
    (writer.output_dir / ".0000.claim").write_text("999999999")  # its writer died: the claim is swept
    writer.delete(0)
    assert not (writer.output_dir / "0000.mp4").exists()


def test_delete_beside_a_second_process_writing_loses_no_other_row(tmp_path):
    """A second process writes 30 videos while this one deletes every even index it sees."""
    out = tmp_path / "out"
    writer = OutputWriter(out)
    proc = subprocess.Popen([sys.executable, "-c", WRITER_SCRIPT, str(out), "30"], cwd=REPO)
    deleted: set[int] = set()
    while_writing = 0
    while proc.poll() is None or any(e["index"] % 2 == 0 and e["index"] not in deleted for e in list_outputs(out)):
        for entry in list_outputs(out):
            if entry["index"] % 2 == 0 and entry["index"] not in deleted:
                try:
                    writer.delete(entry["index"])
                    deleted.add(entry["index"])
                    while_writing += proc.poll() is None
                except UserError as err:  # its writer had not let go of the index yet
                    assert "being written" in str(err)
        time.sleep(0.01)
    assert proc.returncode == 0 and while_writing > 0
    assert deleted == set(range(0, 30, 2))  # the writer took indices 0..29 and none was reused meanwhile
    remaining = rows(out)
    assert sorted(int(r["index"]) for r in remaining) == list(range(1, 30, 2))
    for row in remaining:
        sidecar = json.loads((out / f"{int(row['index']):04d}.json").read_text())
        assert sidecar["prompt"] == row["text"] and row["path"] == f"{int(row['index']):04d}.mp4"
    assert sorted(p.name for p in out.glob("*.mp4")) == [f"{i:04d}.mp4" for i in range(1, 30, 2)]
    assert [n for n in os.listdir(out) if n.startswith(".") and not n.endswith(".lock")] in ([], [".0028.deleted"])


KILLED_DELETE = textwrap.dedent("""
    import os, signal, sys
    import opensora.io.outputs as outputs

    def die(self, index):
        os.kill(os.getpid(), signal.SIGKILL)
    outputs.OutputWriter._remove_rows = die  # killed after the files moved, before the row went
    outputs.OutputWriter(sys.argv[1]).delete(0)
""")


def test_a_delete_killed_midway_is_finished_by_the_next_sweep(tmp_path):
    writer = OutputWriter(tmp_path / "out")
    write(writer, "doomed")
    write(writer, "stays", 1)
    result = subprocess.run([sys.executable, "-c", KILLED_DELETE, str(writer.output_dir)], cwd=REPO)
    assert result.returncode == -9
    assert [e["index"] for e in list_outputs(writer.output_dir)] == [1]  # gone from the listing at once
    writer.sweep()
    assert sorted(os.listdir(writer.output_dir)) == [".0000.deleted", ".results.csv.lock", "0001.json", "0001.mp4",
                                                    "results.csv"]


def test_last_frame_is_kept_as_a_png_reference(tmp_path):
    from PIL import Image

    writer = OutputWriter(tmp_path / "out")
    video = np.zeros((5, 16, 16, 3), np.uint8)
    video[-1] = (200, 40, 40)  # only the last frame is red
    path = writer.write(video, 8, {"prompt": "x", "preset": "demo", "seed": 0}, text="x", seed=0)
    image = save_last_frame(path, writer.output_dir)
    assert image.startswith(str(writer.output_dir / "references")) and image.endswith(".png")
    pixels = np.asarray(Image.open(image).convert("RGB")).astype(int)
    assert np.abs(pixels - (200, 40, 40)).max() < 12  # the red frame (through H.264), not a black one
    assert save_last_frame(path, writer.output_dir) == image  # named by content: kept once
