"""Ten generations in one process through the job runner (the CLI's and the app's path: pipeline
cache, memory profile, writer) do not grow its RSS by more than 5 % after the second.

Run as a script this file is the worker: it prints one JSON line, the RSS (MiB) after each job.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def worker(output_dir: str, profile: str) -> None:
    from opensora.generation_settings import GenerationRequest, resolve_settings
    from opensora.memory.rss import rss_bytes
    from opensora.pipeline_cache import PipelineCache, RuntimeOptions
    from opensora.presets import load_preset
    from opensora.runner import run_job

    preset = load_preset("tiny-random")
    cache = PipelineCache(REPO / "ckpts", options=RuntimeOptions(device="cpu", dtype="fp32", offload=profile))
    after = []
    for k in range(10):
        settings = resolve_settings(GenerationRequest(prompt=f"a red fox {k}", num_steps=2, seed=k), preset)
        run_job(preset, settings, cache, output_dir)
        after.append(round(rss_bytes() / 2**20, 1))
    cache.unload()
    print(json.dumps({"rss_after_mib": after, "videos": len(list(Path(output_dir).glob("*.mp4")))}))


@pytest.mark.slow
@pytest.mark.parametrize("profile", ["none", "disk"])
def test_ten_generations_do_not_grow_rss(tmp_path, profile):
    proc = subprocess.run([sys.executable, __file__, str(tmp_path), profile], cwd=REPO, capture_output=True,
                          text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    after = result["rss_after_mib"]
    print(f"{profile}: RSS after each of 10 jobs (MiB): {after}")
    assert result["videos"] == 10
    assert max(after[2:]) <= 1.05 * after[1]


if __name__ == "__main__":
    worker(sys.argv[1], sys.argv[2])
