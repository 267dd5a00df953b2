"""Official Open-Sora dataset CSVs: probing, the probe cache, and bad rows."""

import csv
import os
from pathlib import Path

import pytest

import training.dataset_csv as dataset_csv
from opensora.errors import UserError
from training.dataset_csv import IMAGE_FPS, load_dataset_csv, probe_cache_path
from training.demo.shapes_dataset import write_dataset


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    """A small shapes-world set: 3 videos of 9 frames + 2 images, full official columns."""
    return write_dataset(tmp_path_factory.mktemp("shapes"), num_clips=3, seed=0, num_images=2, num_frames=9)


def _rows(csv_path: Path) -> list[dict]:
    with open(csv_path, newline="") as f:
        return list(csv.DictReader(f))


def _write_csv(path: Path, rows: list[dict], columns: list[str]) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_full_columns_images_and_videos(rendered):
    data = load_dataset_csv(rendered)
    assert not data.skipped and len(data.records) == 5
    videos, images = data.records[:3], data.records[3:]
    assert all(r.num_frames == 9 and r.fps == 12 and not r.is_image for r in videos)
    assert all(r.num_frames == 1 and r.is_image for r in images)
    assert all(r.path.is_absolute() and r.path.is_file() for r in data.records)
    assert data.records[0].line == 2  # header is line 1
    assert not probe_cache_path(rendered).exists()  # nothing needed probing


def test_missing_columns_are_probed_and_cached(rendered, tmp_path, monkeypatch):
    # Only path,text, with paths relative to a CSV in another folder.
    rows = [{**r, "path": os.path.relpath(rendered.parent / r["path"], tmp_path)} for r in _rows(rendered)]
    csv_path = _write_csv(tmp_path / "min.csv", rows, ["path", "text"])
    monkeypatch.chdir(Path("/"))  # relative paths resolve against the CSV's folder, not the cwd

    data = load_dataset_csv(csv_path)
    expected = load_dataset_csv(rendered).records
    assert [(r.path, r.text) for r in data.records] == [(r.path, r.text) for r in expected]
    assert [(r.num_frames, r.height, r.width) for r in data.records] == [
        (r.num_frames, r.height, r.width) for r in expected
    ]
    assert [r.fps for r in data.records] == [12.0] * 3 + [IMAGE_FPS] * 2
    cache = probe_cache_path(csv_path)
    assert cache.is_file()

    # Second load: every answer comes from the cache.
    def no_probe(path):
        raise AssertionError(f"probed {path} again")

    monkeypatch.setattr(dataset_csv, "probe_video", no_probe)
    monkeypatch.setattr(dataset_csv.Image, "open", no_probe)
    again = load_dataset_csv(csv_path)
    assert again.records == data.records

    # A changed file (new mtime) is probed again; the rest still come from the cache.
    probed = []
    monkeypatch.setattr(dataset_csv, "probe_video", lambda p: probed.append(p) or real_probe(p))
    touched = data.records[0].path
    stat = touched.stat()
    os.utime(touched, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    load_dataset_csv(csv_path)
    assert probed == [touched]


real_probe = dataset_csv.probe_video


def test_blank_cells_are_probed_given_values_win(rendered, tmp_path):
    rows = _rows(rendered)
    rows[0] = {**rows[0], "path": str(rendered.parent / rows[0]["path"]), "num_frames": ""}
    rows[1] = {**rows[1], "path": str(rendered.parent / rows[1]["path"]), "fps": "24"}
    columns = ["path", "text", "num_frames", "height", "width", "fps", "motion_score"]
    rows[0]["motion_score"] = "4.5"
    data = load_dataset_csv(_write_csv(tmp_path / "blank.csv", rows[:2], columns))
    assert data.records[0].num_frames == 9
    assert data.records[1].fps == 24  # the CSV's value is kept, not overwritten by the probe
    assert data.records[0].motion_score == 4.5 and data.records[1].motion_score is None


def test_bad_rows_are_skipped_with_reasons(rendered, tmp_path, caplog):
    good = [{**r, "path": str(rendered.parent / r["path"])} for r in _rows(rendered)]
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "garbage.mp4").write_bytes(b"this is not a video" * 50)
    (tmp_path / "garbage.png").write_bytes(b"not an image either")
    bad = [
        {"path": "missing.mp4", "text": "gone"},
        {"path": "empty.mp4", "text": "zero bytes"},
        {"path": "garbage.mp4", "text": "corrupt"},
        {"path": "garbage.png", "text": "corrupt image"},
        {"path": "", "text": "no path"},
        {**good[0], "num_frames": "many"},
    ]
    columns = ["path", "text", "num_frames", "height", "width", "fps"]
    rows = [{**b, **{c: "" for c in columns if c not in b}} for b in bad]
    csv_path = _write_csv(tmp_path / "mixed.csv", good[:2] + rows + good[2:], columns)

    data = load_dataset_csv(csv_path)
    assert [r.text for r in data.records] == [r["text"] for r in good]
    reasons = {s.path or "<empty>": s.reason for s in data.skipped}
    assert "file not found" in reasons["missing.mp4"] and str(tmp_path / "missing.mp4") in reasons["missing.mp4"]
    assert "empty (0 bytes)" in reasons["empty.mp4"]
    assert "cannot read video" in reasons["garbage.mp4"]
    assert "cannot read image" in reasons["garbage.png"]
    assert reasons["<empty>"] == "empty path"
    assert reasons[good[0]["path"]] == "num_frames is 'many'; must be a number"
    assert [s.line for s in data.skipped] == [4, 5, 6, 7, 8, 9]
    assert "skipped 6 of 11 rows" in caplog.text and "line 4 skipped: file not found" in caplog.text


@pytest.mark.parametrize("header", ["video,caption", "path,caption", "file,text", ""])
def test_wrong_columns_name_found_and_required(tmp_path, header):
    csv_path = tmp_path / "bad.csv"
    csv_path.write_text(header + ("\na.mp4,hello\n" if header else ""))
    with pytest.raises(UserError) as err:
        load_dataset_csv(csv_path)
    message = str(err.value)
    assert "required: path, text" in message and str(csv_path) in message
    assert (f"columns {header.split(',')}" if header else "columns (none)") in message


def test_missing_csv(tmp_path):
    with pytest.raises(UserError, match="dataset CSV not found"):
        load_dataset_csv(tmp_path / "nope.csv")
