"""Stage filter: --where is parsed, never eval()'d; the train/val split never puts scenes of one
source video on both sides; the bucket table is the trainer's own assignment of the output CSV."""

from __future__ import annotations

import pytest

from opensora.errors import UserError
from training.buckets import assign_buckets, load_bucket_config
from training.config import bucket_config_path
from training.curation.filter import FilterConfig, run_filter, split_paths
from training.curation.split import split_by_source
from training.curation.table import read_csv, write_csv
from training.curation.where import compile_where
from training.dataset_csv import load_dataset_csv

COLUMNS = ["motion", "ocr_area", "codec", "width", "height"]


def test_where_keeps_rows_by_their_columns():
    keep = compile_where("motion > 2 and ocr_area < 0.02", COLUMNS)
    assert keep({"motion": "3.5", "ocr_area": "0.01"})
    assert not keep({"motion": "1.5", "ocr_area": "0.01"})
    assert not keep({"motion": "3.5", "ocr_area": "0.2"})
    assert not keep({"motion": "", "ocr_area": "0"})  # a missing value never passes
    keep = compile_where("codec in ('h264', 'hevc') and not width * height < 64 * 64 or motion >= 10", COLUMNS)
    assert keep({"codec": "hevc", "width": "96", "height": "64", "motion": "0"})
    assert not keep({"codec": "vp9", "width": "96", "height": "64", "motion": "0"})
    assert keep({"codec": "vp9", "width": "8", "height": "8", "motion": "12"})
    assert compile_where("1 < motion <= 2", COLUMNS)({"motion": "2"})


@pytest.mark.parametrize("expression, message", [
    ("__import__('os').system('touch pwned')", "Call is not allowed"),
    ("open('pwned', 'w')", "Call is not allowed"),
    ("motion.real > 1", "Attribute is not allowed"),
    ("(lambda: 1)()", "not allowed"),
    ("codec[0] == 'h'", "Subscript is not allowed"),
    ("speed > 1", "no column 'speed'; the CSV has codec, height, motion, ocr_area, width"),
    ("motion >", "not a valid expression"),
    ("motion > True", "True is not allowed"),
])
def test_where_refuses_anything_but_comparisons_of_columns(expression, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match=message.replace("(", r"\(")):
        compile_where(expression, COLUMNS)
    assert not (tmp_path / "pwned").exists()


def test_where_names_a_string_compared_with_a_number():
    keep = compile_where("codec > 2", COLUMNS)
    with pytest.raises(UserError, match="cannot compare 'h264' with 2"):
        keep({"codec": "h264"})


def scene_rows(sources: int, scenes: int) -> list[dict]:
    return [{"path": f"/clips/v{s}-{k}.mp4", "source": f"/raw/v{s}.mp4", "text": "", "num_frames": "24",
             "height": "64", "width": "96", "fps": "12", "start_s": str(2 * k)}
            for s in range(sources) for k in range(scenes)]


def test_split_keeps_every_scene_of_a_source_on_one_side():
    rows = scene_rows(sources=10, scenes=3)
    sides = split_by_source(rows, val_fraction=0.3, seed=1)
    by_source = {}
    for row, side in zip(rows, sides):
        by_source.setdefault(row["source"], set()).add(side)
    assert all(len(s) == 1 for s in by_source.values())  # no leakage
    assert sum(s == {"val"} for s in by_source.values()) == 3
    assert split_by_source(rows, 0.3, seed=1) == sides  # reproducible
    assert split_by_source(rows[:3], 0.3, seed=1) == ["train"] * 3  # one source cannot be split
    assert set(split_by_source(scene_rows(2, 2), 0.01, seed=0)) == {"train", "val"}  # both sides get one


def test_filter_writes_split_files_and_a_bucket_table_that_matches_the_trainer(tmp_path):
    rows = scene_rows(sources=4, scenes=2)
    rows += [dict(rows[0], path="/clips/short.mp4", num_frames="3", source="/raw/short.mp4")]  # fits no bucket
    for row in rows:  # the trainer's loader wants the files to exist
        (tmp_path / row["path"].lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / row["path"].lstrip("/")).write_bytes(b"x")
        row["path"] = str(tmp_path / row["path"].lstrip("/"))
        row["motion"] = "3"
    rows[1]["motion"] = "0.1"
    write_csv(tmp_path / "in.csv", list(rows[0]), rows)
    summary = run_filter(FilterConfig(where="motion > 1", val_fraction=0.25, buckets="tiny"), tmp_path / "in.csv",
                         tmp_path / "meta.csv", progress=False)
    assert summary.dropped == {"where": 1} and summary.rows_out == 8
    train, val = split_paths(tmp_path / "meta.csv")
    train_rows, val_rows = read_csv(train)[1], read_csv(val)[1]
    assert len(train_rows) + len(val_rows) == 8 and val_rows
    assert not {r["source"] for r in train_rows} & {r["source"] for r in val_rows}

    records = load_dataset_csv(tmp_path / "meta.csv", use_probe_cache=False).records
    trainer = assign_buckets(records, load_bucket_config(bucket_config_path("tiny")))
    assert summary.report["buckets"] == trainer.counts() == {"tiny/16:9/9f": 7}
    assert summary.report["no_bucket"] == len(trainer.unassigned) == 1


def test_filter_refuses_a_bad_fraction():
    with pytest.raises(UserError, match=r"--val-fraction is 1.0; must be in \[0, 1\)"):
        FilterConfig(val_fraction=1.0)
