"""opensora.io.outputs: numbering across runs, results.csv quoting, secret-free sidecars."""

import csv
import json
import os

import numpy as np
import pytest

from opensora.io.outputs import OutputWriter, atomic_write_bytes, atomic_write_text, list_outputs


def tiny_video() -> np.ndarray:
    return np.full((2, 16, 16, 3), 100, np.uint8)


def temp_files(directory) -> list[str]:
    return [name for name in os.listdir(directory) if ".tmp-" in name]


def test_atomic_writes(tmp_path):
    atomic_write_text(tmp_path / "a.txt", "line1\nline2 é\n")
    assert (tmp_path / "a.txt").read_bytes() == "line1\nline2 é\n".encode()
    atomic_write_bytes(tmp_path / "sub" / "b.bin", b"\x00\x01")
    atomic_write_bytes(tmp_path / "sub" / "b.bin", b"\x02")
    assert (tmp_path / "sub" / "b.bin").read_bytes() == b"\x02"
    assert temp_files(tmp_path) == [] and temp_files(tmp_path / "sub") == []


def test_numbering_continues_across_instances(tmp_path):
    first = OutputWriter(tmp_path)
    assert first.next_index() == 0
    assert first.write(tiny_video(), 8, {"steps": 1}, "a", 1) == tmp_path / "0000.mp4"
    assert first.write(tiny_video(), 8, {"steps": 1}, "b", 2) == tmp_path / "0001.mp4"
    second = OutputWriter(tmp_path)
    assert second.next_index() == 2
    assert second.write(tiny_video(), 8, {}, "c", 3).name == "0002.mp4"


def test_numbering_grows_past_four_digits(tmp_path):
    (tmp_path / "9999.mp4").write_bytes(b"x")
    assert OutputWriter(tmp_path).write(tiny_video(), 8, {}, "p", 0).name == "10000.mp4"
    assert OutputWriter(tmp_path).next_index() == 10001


def test_results_csv_and_sidecar(tmp_path):
    writer = OutputWriter(tmp_path)
    tricky = 'a cat, on a "red" sofa\nsecond line'
    settings = {
        "prompt": tricky,
        "seed": 42,
        "cfg": 7.5,
        "OPENAI_API_KEY": "sk-secret",
        "refine": {"api_key": "sk-nested", "model": "gpt", "HF_TOKEN": "hf_x"},
        "np_value": np.float32(0.5),
    }
    writer.write(tiny_video(), 8, settings, tricky, 42)
    writer.write(tiny_video(), 8, {"prompt": "plain"}, "plain", 7)

    raw = (tmp_path / "results.csv").read_text(encoding="utf-8")
    assert raw.startswith("index,text,seed,path\n")
    assert raw.count("index,text,seed,path") == 1
    with open(tmp_path / "results.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows == [
        ["index", "text", "seed", "path"],
        ["0", tricky, "42", "0000.mp4"],
        ["1", "plain", "7", "0001.mp4"],
    ]

    sidecar_text = (tmp_path / "0000.json").read_text(encoding="utf-8")
    sidecar = json.loads(sidecar_text)
    assert sidecar == {
        "prompt": tricky, "seed": 42, "cfg": 7.5, "refine": {"model": "gpt"}, "np_value": 0.5
    }
    assert "sk-" not in sidecar_text and "hf_x" not in sidecar_text
    assert "\n  " in sidecar_text  # pretty printed
    assert temp_files(tmp_path) == []


def test_csv_append_repairs_missing_final_newline(tmp_path):
    (tmp_path / "results.csv").write_text("index,text,seed,path\n5,old,1,0005.mp4")
    (tmp_path / "0005.mp4").write_bytes(b"x")
    OutputWriter(tmp_path).write(tiny_video(), 8, {}, "new", 2)
    with open(tmp_path / "results.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[1:] == [["5", "old", "1", "0005.mp4"], ["6", "new", "2", "0006.mp4"]]


def test_list_outputs_newest_first_and_broken_sidecars(tmp_path):
    writer = OutputWriter(tmp_path)
    for i in range(3):
        writer.write(tiny_video(), 8, {"prompt": f"p{i}"}, f"p{i}", i)
    (tmp_path / "0001.json").write_text("{not json")
    (tmp_path / "0002.json").unlink()

    entries = list_outputs(tmp_path)
    assert [e["index"] for e in entries] == [2, 1, 0]
    assert entries[0]["path"] == tmp_path / "0002.mp4"
    assert entries[0]["settings"] is None and entries[0]["settings_broken"] is False
    assert entries[1]["settings"] is None and entries[1]["settings_broken"] is True
    assert entries[2]["settings"] == {"prompt": "p0"} and entries[2]["settings_broken"] is False
    assert entries[2]["text"] == "p0" and entries[2]["seed"] == 0
    assert list_outputs(tmp_path / "nowhere") == []


@pytest.mark.parametrize("bad_fps", [0, -1])
def test_failed_write_leaves_nothing_behind(tmp_path, bad_fps):
    from opensora.errors import UserError

    with pytest.raises(UserError):
        OutputWriter(tmp_path).write(tiny_video(), bad_fps, {}, "x", 0)
    assert [p for p in os.listdir(tmp_path)] == []
