"""Data curation: from raw videos to a training CSV (``python -m training prepare``).

Stages, each a module with a config dataclass and a per-row function (``STAGE``): probe, scenes
(+ cut), motion, ocr, aesthetic, caption; then filter (where / split / bucket report), which
needs the whole table. Shared plumbing: table (CSV format), resume (append + journal), engines
(in-process, process pool, Ray), runner (one stage over a CSV), pipeline (the chain).

    from training.curation.pipeline import ChainConfig, run_pipeline
    from training.curation.scenes import ScenesConfig
    summaries = run_pipeline("raw/", "meta.csv", ["probe", "scenes", "motion", "filter"],
                             ChainConfig(scenes=ScenesConfig(clips_dir="meta_clips")), workers=2)

See README.md in this folder for the commands and columns.
"""
