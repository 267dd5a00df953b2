"""`--engine ray`: the same stage functions as Ray tasks on a local Ray cluster (2 CPUs) give the same CSV
as `--engine local` (clip paths aside, which name each run's own clips folder)."""

from __future__ import annotations

import pytest

from test_curation_media import write_broken_files, write_scenes
from training.curation.filter import FilterConfig
from training.curation.pipeline import ChainConfig, run_pipeline
from training.curation.scenes import ScenesConfig

STAGES = ["probe", "scenes", "motion", "filter"]


def chain(raw, out, engine, workers):
    config = ChainConfig(scenes=ScenesConfig(clips_dir=str(out.parent / "clips")),
                         filter=FilterConfig(val_fraction=0.5, where="motion > 0.5"))
    summaries = run_pipeline(raw, out, STAGES, config, workers=workers, engine=engine, progress=False)
    return summaries, out.read_text().replace(str(out.parent / "clips"), "CLIPS")


def test_ray_engine_writes_the_same_csv_as_the_local_engine(tmp_path):
    pytest.importorskip("ray")
    raw = tmp_path / "raw"
    raw.mkdir()
    write_scenes(raw / "a.mp4", [16, 20], speeds=[0, 2], seed=1)
    write_scenes(raw / "b.mp4", [18, 16], speeds=[1, 3], seed=2)
    write_broken_files(raw)
    local, local_csv = chain(raw, tmp_path / "local" / "meta.csv", "local", workers=1)
    ray, ray_csv = chain(raw, tmp_path / "ray" / "meta.csv", "ray", workers=2)
    assert ray_csv == local_csv
    assert len(local_csv.splitlines()) == 1 + 3  # header + the three moving scenes
    assert [s.to_dict()["dropped"] for s in ray] == [s.to_dict()["dropped"] for s in local]
    assert (tmp_path / "ray" / "clips").is_dir() and len(list((tmp_path / "ray" / "clips").glob("*.mp4"))) == 4
