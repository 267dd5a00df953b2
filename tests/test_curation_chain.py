"""`python -m training prepare` end to end: a folder of raw videos (plus a corrupt and a 0-byte
file) through every stage, with captions from a local stub server, into a CSV that
`python -m training finetune` trains on."""

from __future__ import annotations

import contextlib
import io
import json
import math

import pytest

from openai_stub_server import OpenAIStubServer, StubReply
from test_curation_media import write_broken_files, write_scenes
from training.cli import main as training_main
from training.curation.table import read_csv
from training.dataset_csv import load_dataset_csv
from training.metrics import read_jsonl


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """Three videos of two scenes each (one with a still first scene), a corrupt and an empty file."""
    raw = tmp_path_factory.mktemp("raw")
    write_scenes(raw / "a.mp4", [16, 20], speeds=[0, 2], seed=1)
    write_scenes(raw / "b.mp4", [18, 16], speeds=[1, 3], seed=2)
    (raw / "more").mkdir()
    write_scenes(raw / "more" / "c.mp4", [20, 18], speeds=[2, 1], seed=3)
    write_broken_files(raw)
    out = tmp_path_factory.mktemp("prepared") / "meta.csv"
    with OpenAIStubServer() as stub:
        stub.set_default(StubReply.text("a textured surface slides past the camera"))
        argv = ["prepare", "--input", str(raw), "--output", str(out), "--no-progress", "--ocr-frames", "1",
                "--caption-base-url", stub.base_url, "--caption-model", "stub-vision", "--caption-frames", "1",
                "--where", "motion > 0.5 and ocr_area < 0.02", "--val-fraction", "0.34", "--buckets", "tiny"]
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            code = training_main(argv)
        captions = len(stub.chat_requests)
    assert code == 0
    return out, json.loads(printed.getvalue().strip().splitlines()[-1]), captions


def test_every_stage_runs_and_bad_files_are_reported_not_fatal(prepared):
    out, summary, captions = prepared
    stages = {s["stage"]: s for s in summary["stages"]}
    assert list(stages) == ["probe", "scenes", "motion", "ocr", "aesthetic", "caption", "filter"]
    assert stages["probe"]["dropped"] == {"empty file": 1, "unreadable": 1} and stages["probe"]["rows_out"] == 3
    assert stages["scenes"]["counts"]["scenes found"] == 6
    assert "no --aesthetic-weights" in stages["aesthetic"]["skipped"]
    assert stages["filter"]["dropped"] == {"where": 1}
    assert stages["filter"]["report"]["buckets"] == {"tiny/16:9/9f": 5}
    rows = read_csv(out)[1]
    # 6 scenes found; the still one (a.mp4 scene 0) fails "motion > 0.5".
    assert len(rows) == 5 and captions == 6
    assert sorted({r["source"].rsplit("/", 1)[1] for r in rows}) == ["a.mp4", "b.mp4", "c.mp4"]
    assert all(r["text"] == "a textured surface slides past the camera" for r in rows)
    assert all(float(r["motion_score"]) > 0.5 and r["ocr_area"] == "0" for r in rows)
    assert not any("empty" in r["path"] or "corrupt" in r["path"] for r in rows)
    probe_rows = read_csv(out.with_name("meta.csv.stages") / "01-probe.csv")[1]
    assert len(probe_rows) == 3  # the two broken files are gone after probe
    train, val = read_csv(out.with_suffix(".train.csv"))[1], read_csv(out.with_suffix(".val.csv"))[1]
    assert len(train) + len(val) == 5 and not {r["source"] for r in train} & {r["source"] for r in val}


def test_the_output_csv_is_the_trainers_format_and_trains(prepared, tmp_path):
    out = prepared[0]
    columns = read_csv(out)[0]
    assert columns[:8] == ["path", "text", "num_frames", "height", "width", "fps", "aspect_ratio", "motion_score"]
    dataset = load_dataset_csv(out, use_probe_cache=False)
    assert len(dataset.records) == 5 and not dataset.skipped
    run = tmp_path / "run"
    code = training_main(["finetune", "--config", "tiny", "--data", str(out), "--output-dir", str(run),
                          "--steps", "2", "--threads", "1", "--no-tensorboard", "--checkpoint-every", "100"])
    assert code == 0
    losses = [m["loss"] for m in read_jsonl(run / "metrics.jsonl") if "loss" in m]
    assert losses and all(math.isfinite(x) for x in losses)
    assert (run / "lora.safetensors").is_file()


def test_a_stage_subcommand_reruns_on_its_own_output(prepared, tmp_path):
    out = prepared[0]
    scenes_csv = out.with_name("meta.csv.stages") / "02-scenes.csv"
    first, second = tmp_path / "motion.csv", tmp_path / "motion-again.csv"
    with contextlib.redirect_stdout(io.StringIO()):
        assert training_main(["prepare-motion", str(scenes_csv), str(first), "--no-progress", "--max-motion", "2.5"]) == 0
        assert training_main(["prepare-motion", str(first), str(second), "--no-progress", "--max-motion", "2.5"]) == 0
    columns, rows = read_csv(second)
    assert columns == read_csv(first)[0] and columns.count("motion") == 1
    assert rows == read_csv(first)[1]
    assert all(float(r["motion"]) <= 2.5 for r in rows) and len(rows) < 6


def test_bad_flags_are_one_line_errors_with_exit_2(tmp_path, capsys):
    assert training_main(["prepare", "--input", str(tmp_path), "--output", str(tmp_path / "m.csv"),
                          "--stages", "scenes,probe"]) == 2
    assert "stages run in the order probe, scenes" in capsys.readouterr().err
    assert training_main(["prepare-filter", str(tmp_path / "none.csv"), str(tmp_path / "m.csv")]) == 2
    assert "input CSV not found" in capsys.readouterr().err


def test_help_explains_every_flag_of_every_prepare_command():
    from training.cli import build_parser

    commands = build_parser()._subparsers._group_actions[0].choices
    names = [n for n in commands if n.startswith("prepare")]
    assert names == ["prepare", "prepare-probe", "prepare-scenes", "prepare-motion", "prepare-ocr",
                     "prepare-aesthetic", "prepare-caption", "prepare-filter"]
    for name in names:
        text = commands[name].format_help()
        for action in commands[name]._actions:
            assert action.help and len(action.help) > 15, (name, action.option_strings)
            assert all(flag in text for flag in action.option_strings)
