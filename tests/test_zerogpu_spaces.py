"""The ZeroGPU path with the real `spaces` package (pinned in requirements.txt): off a Space its
decorator hands the function back unchanged, and a generation runs through the decorated call."""

import threading

import av
import pytest

spaces = pytest.importorskip("spaces")


def test_a_tiny_generation_runs_through_the_real_spaces_decorator(tmp_path, monkeypatch):
    from app.zerogpu import estimate_gpu_seconds, gpu_task
    from opensora.generation_settings import GenerationRequest, resolve_settings
    from opensora.pipeline_cache import PipelineCache
    from opensora.presets import load_preset
    from opensora.runner import SilentProgress, run_job

    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)  # off a Space, as here
    durations = []

    def duration(preset, settings, *_):
        durations.append(estimate_gpu_seconds(preset, settings))
        return durations[-1]

    def generate(preset, settings, cache, output_dir, progress, cancel_event):
        return run_job(preset, settings, cache, output_dir, progress, cancel_event)

    decorated = gpu_task(duration=duration)(generate)
    assert decorated is generate and not hasattr(decorated, "zerogpu")  # spaces marks its GPU wrappers so

    preset = load_preset("tiny-random")
    settings = resolve_settings(GenerationRequest(prompt="a red circle", num_steps=2, num_frames=5, seed=7), preset)
    result = decorated(preset, settings, PipelineCache(tmp_path / "ckpts", "cpu", "fp32"), tmp_path / "out",
                       SilentProgress(), threading.Event())
    assert len(result.paths) == 1 and result.sidecars[0]["seed"] == 7
    with av.open(str(result.paths[0])) as container:
        assert sum(1 for _ in container.decode(video=0)) == 5
    assert durations == []  # the duration is only asked for on ZeroGPU
