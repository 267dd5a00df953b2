"""Every way to make a video goes through `opensora.runner.run_job` with resolved settings (#33):
the CLI (a prompt, a CSV), the app's two video tabs, and Reuse of a sidecar."""

import ast
import json
from pathlib import Path

import pytest

from conftest import REPO
from opensora.cli import main
from opensora.generation_settings import GenerationSettings
from opensora.runner import JobResult


@pytest.fixture
def calls(monkeypatch):
    seen = []

    def fake_run_job(preset, settings, pipelines, output_dir, progress=None, cancel_event=None, refine_settings=None,
                     record=None):
        assert isinstance(settings, GenerationSettings) and settings.preset == preset.name
        seen.append(settings)
        return JobResult([Path(output_dir) / "0000.mp4"], [settings.sample(k).to_dict()
                                                           for k in range(settings.num_samples)], [], 0.0)

    monkeypatch.setattr("opensora.runner.run_job", fake_run_job)
    return seen


def test_cli_prompt_and_csv_go_through_the_runner(calls, tmp_path):
    assert main(["generate", "--preset", "tiny-random", "--prompt", "a cat", "--seed", "4",
                 "--output-dir", str(tmp_path)]) == 0
    table = tmp_path / "jobs.csv"
    table.write_text("text,seed\na dog,5\na bird,6\n")
    assert main(["generate", "--preset", "tiny-random", "--csv", str(table), "--output-dir", str(tmp_path)]) == 0
    assert [(s.prompt, s.seed) for s in calls] == [("a cat", 4), ("a dog", 5), ("a bird", 6)]


def call_tab(demo, api_name: str, **values):
    """Call a tab's Generate function as Gradio does, by parameter name (unnamed flags off)."""
    import inspect

    fn = next(f.fn for f in demo.fns.values() if f.api_name == api_name)
    names = inspect.signature(fn).parameters
    values = {"request": None, "progress": lambda *args, **kwargs: None, **values}
    return fn(**{name: values.get(name, False) for name in names})


FORM = dict(preset="tiny-random", resolution="tiny", aspect_ratio="1:1", num_frames=5, num_steps=2, guidance=7.5,
            guidance_img=3.0, motion_score="4", seed=9, random_seed=False, num_samples=1, refine=False, lora="",
            lora_scale=1.0, negative_prompt="")


def test_both_tabs_and_reuse_go_through_the_runner(calls, tmp_path):
    from PIL import Image

    from app.config import AppConfig
    from app.ui import build_app
    from opensora.generation_settings import GenerationRequest

    config = AppConfig(output_dir=tmp_path / "out", runs_dir=tmp_path / "runs", preset="tiny-random")
    demo, _ = build_app(config)
    call_tab(demo, "generate-t2v", prompt="a cat", **FORM)
    image = tmp_path / "ref.png"
    Image.new("RGB", (64, 64), (200, 0, 0)).save(image)
    call_tab(demo, "generate-i2v", prompt="a red cat", reference_image=str(image), cond_type="i2v_head",
             end_image=None, reference_video=None, **{**FORM, "aspect_ratio": "auto"})
    t2v, i2v = calls
    assert (t2v.cond_type, t2v.prompt, t2v.seed, t2v.num_frames) == ("t2v", "a cat", 9, 5)
    assert (i2v.cond_type, i2v.aspect_ratio) == ("i2v_head", "1:1")
    assert Path(i2v.reference[0]).read_bytes() == image.read_bytes()  # kept in the output folder

    # Reuse: the sidecar of a video becomes the same settings again.
    sidecar = json.loads(json.dumps(t2v.to_dict()))
    again = GenerationRequest.from_sidecar(sidecar)
    from opensora.generation_settings import resolve_settings
    from opensora.presets import load_preset

    assert resolve_settings(again, load_preset("tiny-random")) == t2v


def test_no_core_or_app_module_imports_an_entry_point():
    """opensora/ and app/ reuse library modules, never another command's or launch.py's code."""
    entry_points = {"launch", "opensora.cli", "training.cli"} | {
        f"opensora.commands.{p.stem}" for p in (REPO / "opensora" / "commands").glob("*.py")}
    offenders = []
    for path in [*(REPO / "opensora").rglob("*.py"), *(REPO / "app").rglob("*.py")]:
        module = ".".join(path.relative_to(REPO).with_suffix("").parts)
        if module in entry_points or module == "opensora.__main__":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else \
                [a.name for a in node.names] if isinstance(node, ast.Import) else []
            offenders += [f"{module} imports {n}" for n in names if n in entry_points]
    commands = [p for p in (REPO / "opensora" / "commands").glob("*.py") if p.stem != "__init__"]
    for path in commands:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("opensora.commands"):
                offenders.append(f"opensora.commands.{path.stem} imports {node.module}")
    assert offenders == []
