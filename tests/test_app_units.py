"""The app's parts without a server: cancel flags, progress/ETA, references, fine-tune runs (with a
stand-in trainer), history, reuse settings, ZeroGPU wrapper, and that switching presets frees the
old pipeline."""

import gc
import re
import json
import sys
import time
import types
import weakref
from pathlib import Path

import numpy as np
import pytest

from app.progress import StepProgress, format_seconds
from app.tab_i2v import reference_paths
from app.training_runs import (
    RunSpec,
    TrainingRuns,
    config_for_preset,
    dataset_csv,
    lora_choices,
    read_metrics,
    training_configs,
)
from opensora.errors import UserError
from opensora.io.video import write_video
from opensora.presets import load_preset

REPO = Path(__file__).resolve().parent.parent


def queued_handler(config, cache):
    """The app's Generate handler over a fresh job queue with its worker thread running."""
    from app.generate_handler import GenerateHandler
    from opensora.job_queue import JobQueue
    from opensora.queue_worker import QueueWorker

    queue = JobQueue(config.output_dir)
    worker = QueueWorker(queue, cache)
    worker.start()
    return GenerateHandler(config, cache, queue, worker)
FAKE_TRAINER = (sys.executable, str(REPO / "tests" / "fake_trainer.py"))


# ------------------------------------------------------------------------------ progress
def test_step_progress_counts_steps_across_samples_and_gives_an_eta():
    reports = []
    progress = StepProgress(lambda fraction, desc: reports.append((fraction, desc)))
    progress.message("loading")
    progress.begin(num_samples=2)
    for _sample in range(2):
        for step in range(3):
            progress(step, 3, None)
    assert reports[0] == (None, "loading")
    assert [r[0] for r in reports[1:]] == [(1, 6), (2, 6), (3, 6), (4, 6), (5, 6), (6, 6)]
    assert reports[1][1].startswith("sample 1/2 · step 1/3 · ETA ")
    assert reports[-1][1] == "sample 2/2 · step 3/3 · ETA 0 s"
    assert format_seconds(75) == "1 min 15 s" and format_seconds(3700) == "1 h 01 min"


def test_reference_paths_per_conditioning_type():
    assert reference_paths("i2v_head", "a.png", None, None) == ["a.png"]
    assert reference_paths("i2v_tail", "a.png", "b.png", None) == ["a.png"]
    assert reference_paths("i2v_loop", "a.png", "b.png", None) == ["a.png", "b.png"]
    assert reference_paths("i2v_loop", "a.png", None, None) == ["a.png"]  # loops back to the same image
    assert reference_paths("v2v_tail", "a.png", None, "v.mp4") == ["v.mp4"]
    assert reference_paths("i2v_head", None, None, None) == []


# ------------------------------------------------------------------------------ fine-tune runs
def test_dataset_folder_of_videos_and_captions_becomes_a_csv(tmp_path):
    clips = tmp_path / "clips"
    clips.mkdir()
    (clips / "a.mp4").write_bytes(b"x")
    (clips / "a.txt").write_text("a red ball\nbounces\n")
    (clips / "b.mp4").write_bytes(b"x")
    with pytest.raises(UserError, match="caption.*b.mp4"):
        dataset_csv(str(clips), tmp_path / "run")
    (clips / "b.txt").write_text("a blue cube")
    csv_path = dataset_csv(str(clips), tmp_path / "run")
    assert csv_path == tmp_path / "run" / "data.csv"
    lines = csv_path.read_text().splitlines()
    assert lines[0] == "path,text"
    assert lines[1] == f"{clips.resolve() / 'a.mp4'},a red ball bounces"
    given = tmp_path / "given.csv"
    given.write_text("path,text\n")
    assert dataset_csv(str(given), tmp_path / "run2") == given.resolve()
    with pytest.raises(UserError, match="does not exist"):
        dataset_csv(str(tmp_path / "nope"), tmp_path / "run3")


def test_training_settings_files_give_the_tab_its_defaults(tmp_path):
    (tmp_path / "train-default.toml").write_text('mode = "lora"\nsteps = 1000\n[optim]\nlr = 1e-4\n')
    (tmp_path / "train-tiny.toml").write_text('preset = "tiny-random"\nsteps = 30\n[optim]\nlr = 1e-2\n'
                                              '[lora]\nrank = 8\n')
    (tmp_path / "train-broken.toml").write_text("steps = [")
    configs = training_configs(tmp_path)
    assert set(configs) == {"default", "tiny"}
    assert (configs["tiny"].steps, configs["tiny"].lr, configs["tiny"].lora_rank) == (30, 1e-2, 8)
    assert config_for_preset("tiny-random", configs) == "tiny"
    assert config_for_preset("opensora-v2-256px", configs) == "default"


def wait_for_state(runs, name, states, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view = runs.view(name)
        settled = view.state == "running" or runs.running_name() is None  # final status: process gone too
        if view.state in states and settled:
            return view
        time.sleep(0.1)
    raise AssertionError(f"run {name} stayed {runs.view(name).state}; log:\n{runs.view(name).log_tail}")


def test_training_run_start_finish_and_lora_in_picker(tmp_path):
    runs = TrainingRuns(tmp_path / "runs", command=FAKE_TRAINER)
    data = tmp_path / "data.csv"
    data.write_text("path,text\nx.mp4,a ball\n")
    runs.start(RunSpec(name="first", preset="tiny-random", data=str(data), lora_rank=4, steps=5, lr=1e-3,
                       config="tiny"))
    view = wait_for_state(runs, "first", {"finished", "failed", "exited"})
    assert view.state == "finished" and view.step == 5 and view.total_steps == 5
    assert [m["step"] for m in view.metrics] == [1, 2, 3, 4, 5]
    assert "step 5 loss" in view.log_tail
    launch = json.loads((tmp_path / "runs" / "first" / "app_launch.json").read_text())
    assert launch["args"][:4] == ["--config", "tiny", "--preset", "tiny-random"]
    assert launch["args"][-4:] == ["--mode", "lora", "--lora-rank", "4"]
    labels = dict(lora_choices(tmp_path / "runs"))
    assert labels["first (tiny-random)"] == str((tmp_path / "runs" / "first" / "lora.safetensors").resolve())
    assert runs.run_names() == ["first"]
    with pytest.raises(UserError, match="exists already"):
        runs.start(RunSpec(name="first", preset="tiny-random", data=str(data)))
    with pytest.raises(UserError, match="has finished"):
        runs.resume("first")
    with pytest.raises(UserError, match="not allowed"):
        runs.start(RunSpec(name="../escape", preset="tiny-random", data=str(data)))


def test_training_run_stop_is_clean_and_resume_continues(tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_STEP_S", "0.2")
    runs = TrainingRuns(tmp_path / "runs", command=FAKE_TRAINER)
    data = tmp_path / "data.csv"
    data.write_text("path,text\n")
    runs.start(RunSpec(name="long", preset="tiny-random", data=str(data), steps=12))
    wait_for_state(runs, "long", {"running"})
    with pytest.raises(UserError, match="still training"):
        runs.start(RunSpec(name="other", preset="tiny-random", data=str(data)))
    while not read_metrics(tmp_path / "runs" / "long" / "metrics.jsonl"):
        time.sleep(0.05)
    assert runs.stop("long")
    view = wait_for_state(runs, "long", {"stopped", "exited", "failed"})
    assert view.state == "stopped" and 0 < view.step < 12
    stopped_at = view.step
    assert (tmp_path / "runs" / "long" / "checkpoints" / f"step-{stopped_at:06d}").is_dir()
    assert not runs.stop("long")  # not running any more
    monkeypatch.setenv("FAKE_STEP_S", "0.01")
    runs.resume("long")
    view = wait_for_state(runs, "long", {"finished", "failed", "exited"})
    assert view.state == "finished" and view.step == 12
    steps = [m["step"] for m in view.metrics]
    assert steps == list(range(1, 13))  # continued where it stopped, no step twice


def test_training_run_that_crashes_shows_its_exit_and_console(tmp_path):
    runs = TrainingRuns(tmp_path / "runs", command=(sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"))
    data = tmp_path / "data.csv"
    data.write_text("path,text\n")
    runs.start(RunSpec(name="bad", preset="tiny-random", data=str(data)))
    view = wait_for_state(runs, "bad", {"exited"})
    assert "code 3" in view.message and "boom" in view.log_tail


def test_page_load_keeps_a_typed_run_name_and_shows_the_running_one(tmp_path, monkeypatch):
    """The tab's load event lands after the page is up: it must not overwrite a name typed meanwhile
    (CI once started the run under the default name that way), but a reloaded page shows what trains."""
    import gradio as gr

    from app.config import AppConfig
    from app.tab_finetune import build_finetune_tab

    runs = TrainingRuns(tmp_path / "runs", command=FAKE_TRAINER)
    with gr.Blocks() as demo:
        build_finetune_tab(demo, AppConfig(runs_dir=tmp_path / "runs", ckpt_dir=tmp_path / "ckpts"), runs,
                           "tiny-random", [])
    on_load = next(f.fn for f in demo.fns.values() if f.targets and f.targets[0][1] == "load")
    name_update, status, *_ = on_load("typed-name", [])
    assert name_update == gr.update() and 'data-state="not started"' in status

    monkeypatch.setenv("FAKE_STEP_S", "0.2")
    data = tmp_path / "data.csv"
    data.write_text("path,text\n")
    runs.start(RunSpec(name="training-now", preset="tiny-random", data=str(data), steps=20))
    try:
        name_update, status, *_ = on_load("typed-name", [])
        assert name_update == "training-now" and "training-now" in status
    finally:
        runs.stop_all()


# ------------------------------------------------------------------------------ history / reuse
def test_history_items_and_reuse_fill_from_sidecars(tmp_path):
    import torch

    from app.config import AppConfig
    from app.settings_form import FILL_FIELDS, fill_updates
    from app.tab_history import history_items, read_sidecar
    from opensora.generation_settings import GenerationRequest
    from opensora.io.outputs import OutputWriter

    writer = OutputWriter(tmp_path / "out")
    video = torch.zeros(3, 5, 32, 64)
    settings = {"preset": "tiny-random", "prompt": "a ball", "cond_type": "t2v", "seed": 7, "num_frames": 5,
                "resolution": "tiny", "aspect_ratio": "1:1", "num_steps": 3, "guidance": 5.0,
                "guidance_img": 2.0, "motion_score": 9}
    writer.write(video, 8, settings, text="a ball", seed=7)
    writer.write(video, 8, {**settings, "prompt": "a cube", "cond_type": "i2v_head"}, text="a cube", seed=8)
    items, indices = history_items(tmp_path / "out", limit=10)
    assert indices == [1, 0]  # newest first
    assert items[0][1].startswith("#0001 · i2v_head · a cube")
    assert read_sidecar(tmp_path / "out", 0)["seed"] == 7

    config = AppConfig(output_dir=tmp_path / "out", runs_dir=tmp_path / "runs")
    request = GenerationRequest.from_sidecar(read_sidecar(tmp_path / "out", 0), tmp_path / "out")
    values = dict(zip(FILL_FIELDS, fill_updates(request, config, image_tab=False)))
    assert values["preset"] == "tiny-random"
    assert values["aspect_ratio"]["value"] == "1:1"
    assert values["num_frames"]["value"] == 5 and values["num_steps"] == 3 and values["motion_score"] == "9"
    assert values["seed"]["value"] == 7 and values["random_seed"] is False


def test_presets_without_files_are_not_selectable_and_say_how_to_get_them(tmp_path):
    from app.presets_info import availability, check_selectable

    info = availability(tmp_path)
    assert "tiny-random" in info.selectable and "opensora-v2-256px" in info.missing
    help_text = info.help_markdown(tmp_path)
    assert "Open_Sora_v2.safetensors" in help_text and "huggingface-cli download" in help_text
    with pytest.raises(UserError, match="missing .*Open_Sora_v2.safetensors.*huggingface-cli download"):
        check_selectable("opensora-v2-256px", tmp_path)
    with pytest.raises(UserError, match="unknown preset 'nope'"):
        check_selectable("nope", tmp_path)


# ------------------------------------------------------------------------------ ZeroGPU
def test_gpu_task_uses_spaces_when_installed(monkeypatch):
    from app import zerogpu

    calls = []

    def fake_gpu(duration):
        def wrap(fn):
            def run(*args):
                calls.append(duration(*args))
                return fn(*args)
            return run
        return wrap

    monkeypatch.setitem(sys.modules, "spaces", types.SimpleNamespace(GPU=fake_gpu))
    wrapped = zerogpu.gpu_task(duration=lambda x: 10 * x)(lambda x: x + 1)
    assert wrapped(3) == 4 and calls == [30]
    monkeypatch.setitem(sys.modules, "spaces", None)  # import fails: plain function
    plain = lambda x: x  # noqa: E731
    assert zerogpu.gpu_task(duration=lambda x: 1)(plain) is plain


def test_gpu_duration_grows_with_the_work():
    from app.zerogpu import estimate_gpu_seconds
    from opensora.generation_settings import GenerationRequest, resolve_settings
    from opensora.presets import load_preset

    def seconds(name, **values):
        p = load_preset(name)
        return estimate_gpu_seconds(p, resolve_settings(GenerationRequest(prompt="x", **values), p))

    small = seconds("opensora-v2-256px", num_frames=33, num_steps=10)
    large = seconds("opensora-v2-768px", num_frames=129, num_steps=50)
    assert 30 <= small < large <= 900


# ------------------------------------------------------------------------------ model memory
def test_switching_presets_frees_the_old_pipeline(tmp_path):
    """Load tiny-random, generate (also a failing run whose traceback passed through the
    pipeline), switch to another preset: the first pipeline object must be garbage."""
    import psutil

    from app.config import AppConfig
    from app.generate_handler import GenerateHandler
    from opensora.generation_settings import GenerationRequest
    from opensora.pipeline_cache import PipelineCache

    other = tmp_path / "tiny-b.toml"
    text = (REPO / "presets" / "tiny-random.toml").read_text().replace('name = "tiny-random"', 'name = "tiny-b"')
    other.write_text(text.replace("seed = 0", "seed = 5"))
    config = AppConfig(output_dir=tmp_path / "out", runs_dir=tmp_path / "runs")
    cache = PipelineCache(config.ckpt_dir, device="cpu", dtype="fp32")
    handler = queued_handler(config, cache)
    no_progress = lambda *args, **kwargs: None  # noqa: E731
    video, _, status, seed = handler.run(GenerationRequest(preset="tiny-random", prompt="a ball", num_frames=5,
                                                           num_steps=2, seed=3), None, no_progress)
    assert Path(video).is_file() and seed == 3
    tiny = load_preset("tiny-random")
    assert cache.get(tiny) is cache.get(tiny)  # loaded once, kept
    first = weakref.ref(cache.get(tiny))
    short = tmp_path / "short.mp4"
    write_video(short, np.zeros((5, 32, 64, 3), np.uint8), fps=8)
    import gradio as gr

    with pytest.raises(gr.Error, match="at least 33 frames"):  # fails inside the pipeline (reference encoding)
        handler.run(GenerationRequest(preset="tiny-random", prompt="a ball", cond_type="v2v_head",
                                      reference=[str(short)], num_frames=37, num_steps=2), None, no_progress)
    rss_before = psutil.Process().memory_info().rss
    assert cache.get(load_preset(str(other))).preset.name == "tiny-b"
    gc.collect()
    assert first() is None, f"old pipeline still referenced by: {gc.get_referrers(first())[:3]}"
    assert cache.loaded == "tiny-b"
    cache.unload()
    gc.collect()
    assert cache.loaded is None
    assert psutil.Process().memory_info().rss < rss_before + 200 * 2**20  # no second model kept around


def test_generation_cancelled_between_steps_reports_and_writes_nothing(tmp_path):
    from app.config import AppConfig
    from app.generate_handler import GenerateHandler
    from opensora.generation_settings import GenerationRequest
    from opensora.pipeline_cache import PipelineCache

    config = AppConfig(output_dir=tmp_path / "out", runs_dir=tmp_path / "runs")
    handler = queued_handler(config, PipelineCache(config.ckpt_dir, "cpu", "fp32"))
    seen = []

    def progress(fraction, desc=None, unit=None):
        seen.append(fraction)
        if fraction and fraction[0] >= 2:
            handler.cancel(None)

    video, _, status, _ = handler.run(GenerationRequest(preset="tiny-random", prompt="a ball", num_frames=5,
                                                        num_steps=200), None, progress)
    assert video is None and "Cancelled" in status and re.search(r"before step \d+ of 200", status)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("*.mp4"))


@pytest.mark.parametrize("raised, message", [
    ("oom", "Out of memory while generating. Try fewer frames"),
    ("bug", "Generation failed \\(RuntimeError: kaputt\\). The app is still running."),
])
def test_out_of_memory_and_unexpected_errors_become_messages(tmp_path, monkeypatch, raised, message):
    import gradio as gr
    import torch

    from app import generate_handler
    from app.config import AppConfig
    from opensora.generation_settings import GenerationRequest
    from opensora.pipeline_cache import PipelineCache

    def failing(*_args, **_kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory") if raised == "oom" else RuntimeError("kaputt")

    monkeypatch.setattr("opensora.runner.run_job", failing)
    config = AppConfig(output_dir=tmp_path / "out", runs_dir=tmp_path / "runs")
    handler = queued_handler(config, PipelineCache(config.ckpt_dir, "cpu", "fp32"))
    with pytest.raises(gr.Error, match=message):
        handler.run(GenerationRequest(preset="tiny-random", prompt="x"), None, lambda *a, **k: None)
    assert handler.cancel(None) == "Nothing to cancel."  # the failed job is over
    assert [j.state for j in handler.queue.jobs()] == ["failed"]


def test_space_front_matter_matches_the_pinned_gradio():
    """A Hugging Face Space installs the sdk_version the README names, not requirements.txt's pin."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    front_matter = (root / "README.md").read_text().split("---")[1]
    pin = re.search(r"^gradio==(\S+)$", (root / "requirements.txt").read_text(), re.M).group(1)
    assert re.search(r"^app_file: launch.py$", front_matter, re.M)
    assert re.search(r"^sdk_version: (\S+)$", front_matter, re.M).group(1) == pin
