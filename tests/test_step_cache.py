"""Faster sampling (#28): --speed / --cache step caches, MagCache calibration, --compile."""

import copy
import json
import shutil

import pytest
import torch

from opensora.cli import main
from opensora.errors import UserError
from opensora.generation_settings import GenerationRequest, resolve_settings
from opensora.presets import load_preset
from opensora.sampling.cache_spec import METHOD_NAMES, parse_cache_spec

TINY = load_preset("tiny-random")
# One spec per method that really skips on the tiny preset's few steps.
SKIPPING = {
    "first-block": "first-block:threshold=1",
    "taylorseer": "taylorseer:interval=2,warmup=1",
    "magcache": "magcache:threshold=1,max-skip=2,retention=0",
    "pab": "pab:every=2,tmin=0,tmax=1000",
    "fastercache": "fastercache:every=2,tmin=0,tmax=1000",
}


@pytest.fixture(scope="module")
def tiny_pipe():
    from opensora.pipeline import OpenSoraPipeline

    torch.set_num_threads(1)
    return OpenSoraPipeline.from_preset("tiny-random")


def no_hooks_left(transformer) -> bool:
    from opensora.sampling.step_cache import has_cache_hooks

    return not has_cache_hooks(transformer)


# ------------------------------------------------------------------------------ specs and settings
def test_a_spec_names_every_parameter_and_fills_defaults():
    spec = parse_cache_spec("taylorseer:interval=4")
    assert spec.text == "taylorseer:interval=4,warmup=3,order=1,lite=1"
    assert parse_cache_spec(spec.text) == spec  # what the sidecar records parses back to the same cache
    assert parse_cache_spec("none") is None and parse_cache_spec("") is None
    assert set(METHOD_NAMES) == set(SKIPPING)


@pytest.mark.parametrize("text, message", [
    ("teacache", "unknown cache method 'teacache'; allowed: first-block, taylorseer, magcache, pab, fastercache"),
    ("first-block:thresh=0.1", "'thresh=0.1' is not PARAM=VALUE with PARAM one of threshold"),
    ("first-block:threshold=2", "threshold '2' is out of range: allowed 0 to 1"),
    ("taylorseer:interval=2.5", "interval '2.5' is not an integer; allowed 1 to 20"),
    ("pab:tmin=800,tmax=100", "tmin 800 must be below tmax 100"),
])
def test_bad_cache_specs_name_the_allowed_values(text, message):
    with pytest.raises(UserError) as err:
        parse_cache_spec(text)
    assert message in str(err.value)


def test_bad_speed_and_cache_flags_are_one_line_and_exit_2(capsys, tmp_path):
    base = ["generate", "--preset", "tiny-random", "--prompt", "a cat", "--output-dir", str(tmp_path)]
    assert main([*base, "--speed", "turbo"]) == 2
    assert "speed 'turbo' is not one of quality, balanced, fast" in capsys.readouterr().err
    assert main([*base, "--cache", "teacache:x=1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "allowed: first-block, taylorseer, magcache, pab, fastercache" in err
    assert main([*base, "--speed", "fast", "--cache", "first-block"]) == 2
    assert "speed fast of preset tiny-random is taylorseer" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # refused before anything loaded or was written


def test_speed_resolves_to_the_presets_cache_and_reuse_gives_it_back():
    for speed in ("quality", "balanced", "fast"):
        settings = resolve_settings(GenerationRequest(prompt="a cat", speed=speed, seed=1), TINY)
        expected = "" if speed == "quality" else parse_cache_spec(getattr(TINY.speed, speed)).text
        assert (settings.speed, settings.cache) == (speed, expected)
        again = resolve_settings(GenerationRequest.from_sidecar(settings.to_dict()), TINY)
        assert (again.speed, again.cache) == (speed, expected)
    custom = resolve_settings(GenerationRequest(prompt="a cat", cache="pab:every=3"), TINY)
    assert (custom.speed, custom.cache) == ("custom", "pab:every=3,tmin=100,tmax=800")
    # the cache of the speed, spelled out, is that speed
    named = resolve_settings(GenerationRequest(prompt="a cat", cache=TINY.speed.fast), TINY)
    assert named.speed == "fast"


def test_a_preset_without_speed_settings_offers_quality_only():
    official = load_preset("opensora-v2-256px")
    assert resolve_settings(GenerationRequest(prompt="a cat", speed="quality"), official).cache == ""
    with pytest.raises(UserError, match="has no measured 'balanced' setting.*--cache"):
        resolve_settings(GenerationRequest(prompt="a cat", speed="balanced"), official)


def test_magcache_without_calibration_fails_before_loading_and_names_the_command(tmp_path):
    shutil.copy(TINY.path, tmp_path / "tiny-random.toml")  # a preset folder without cache/
    preset = load_preset(str(tmp_path / "tiny-random.toml"))
    with pytest.raises(UserError, match="run `python -m opensora calibrate-cache --preset tiny-random`"):
        resolve_settings(GenerationRequest(prompt="a cat", cache="magcache"), preset)


# ------------------------------------------------------------------------------ generations
@pytest.mark.parametrize("speed", ["quality", "balanced", "fast"])
def test_each_speed_runs_on_the_tiny_preset_and_the_sidecar_records_it(tmp_path, speed):
    assert main(["generate", "--preset", "tiny-random", "--prompt", "a cat", "--seed", "3", "--speed", speed,
                 "--threads", "1", "--output-dir", str(tmp_path)]) == 0
    sidecar = json.loads((tmp_path / "0000.json").read_text())
    expected = "" if speed == "quality" else parse_cache_spec(getattr(TINY.speed, speed)).text
    assert (sidecar["speed"], sidecar["cache"], sidecar["compile"]) == (speed, expected, False)
    assert (tmp_path / "0000.mp4").stat().st_size > 0


@pytest.mark.parametrize("method", ["first-block", "taylorseer", "magcache"])
def test_no_cache_state_leaks_from_one_video_into_the_next(tiny_pipe, method):
    """A, then B, then A again: A's exact latent; samples of one request are reset between them too;
    and no hook is left on the transformer after a generation."""
    cache = SKIPPING[method]
    first = tiny_pipe("a red cat", seed=5, cache=cache).latents[0]
    assert no_hooks_left(tiny_pipe.transformer)
    tiny_pipe("a blue dog", seed=9, cache=cache)
    assert torch.equal(tiny_pipe("a red cat", seed=5, cache=cache).latents[0], first)
    pair = tiny_pipe("a red cat", seed=5, num_samples=2, cache=cache)
    assert torch.equal(pair.latents[0], first)
    assert torch.equal(pair.latents[1], tiny_pipe("a red cat", seed=6, cache=cache).latents[0])
    assert not torch.equal(first, tiny_pipe("a red cat", seed=5).latents[0])  # the cache did skip something
    assert no_hooks_left(tiny_pipe.transformer)


def test_a_cancelled_generation_leaves_no_hooks(tiny_pipe):
    from opensora.sampling.denoise import GenerationCancelled

    class CancelAfterFirstStep:
        def __init__(self):
            self.steps = 0

        def is_set(self):
            return self.steps > 0

    cancel = CancelAfterFirstStep()

    def count(step, total, latent):
        cancel.steps += 1

    with pytest.raises(GenerationCancelled):
        tiny_pipe("a cat", seed=1, speed="balanced", callback=count, cancel_event=cancel)
    assert no_hooks_left(tiny_pipe.transformer)


@pytest.mark.parametrize("method", sorted(SKIPPING))
def test_guidance_combines_outputs_of_one_step(tiny_pipe, method):
    """The three guidance rows (cond, uncond, uncond2) of each step are either all computed fresh or
    all reused: compared row by row with an uncached copy of the model on the same inputs. On step 0
    (never skipped) the cached sampler gives the uncached sampler's latent."""
    from opensora.models.mmdit import mmdit_forward
    from opensora.pipeline import GenerationResult  # noqa: F401 - the pipeline module is loaded

    plain = copy.deepcopy(tiny_pipe.transformer)
    fresh_rows: list[tuple[bool, ...]] = []
    original = tiny_pipe._model_fn

    def checking(img, cond, txt, y_vec, timesteps, img_ids):
        out = original(img, cond, txt, y_vec, timesteps, img_ids)
        reference = mmdit_forward(plain, img, cond, txt, y_vec, timesteps, img_ids)
        fresh_rows.append(tuple(torch.allclose(o, r, atol=1e-5) for o, r in zip(out, reference)))
        return out

    after_step0 = {}

    def first_latent(name):
        def callback(step, total, latent):
            if step == 0:
                after_step0[name] = latent.clone()
        return callback

    tiny_pipe("a cat", seed=2, num_steps=8, callback=first_latent("plain"))
    tiny_pipe._model_fn = checking
    try:
        tiny_pipe("a cat", seed=2, num_steps=8, cache=SKIPPING[method], callback=first_latent("cached"))
    finally:
        del tiny_pipe._model_fn  # back to the class's method
    assert len(fresh_rows) == 8 * 1  # one forward (of all three rows) per step
    assert all(len(set(rows)) == 1 for rows in fresh_rows), fresh_rows  # never a mix of steps
    assert fresh_rows[0] == (True, True, True)
    assert any(rows == (False, False, False) for rows in fresh_rows)  # it did reuse some step
    assert torch.equal(after_step0["cached"], after_step0["plain"])


# ------------------------------------------------------------------------------ MagCache calibration
def test_calibrate_cache_stores_ratios_that_magcache_then_uses(tmp_path, capsys):
    import tomllib

    preset_path = tmp_path / "tiny-random.toml"
    shutil.copy(TINY.path, preset_path)
    assert main(["calibrate-cache", "--preset", str(preset_path), "--seeds", "2", "--num-steps", "6"]) == 0
    written = tmp_path / "cache" / "tiny-random-magcache.toml"
    assert capsys.readouterr().out.strip() == str(written)
    data = tomllib.loads(written.read_text())
    assert data["num_steps"] == 6 and data["seeds"] == [0, 1] and len(data["ratios"]) == 6
    assert data["ratios"][0] == 1.0 and all(0.2 < r < 5 for r in data["ratios"])
    out = tmp_path / "out"
    assert main(["generate", "--preset", str(preset_path), "--prompt", "a cat", "--cache", "magcache:threshold=0.5",
                 "--num-steps", "6", "--threads", "1", "--output-dir", str(out)]) == 0
    assert json.loads((out / "0000.json").read_text())["cache"] == "magcache:threshold=0.5,max-skip=3,retention=0.2"


def test_the_shipped_presets_speed_settings_parse_and_their_magcache_is_calibrated():
    from opensora.presets import available_presets
    from opensora.sampling.cache_spec import read_mag_ratios

    for name in available_presets():
        preset = load_preset(name)
        for level in ("balanced", "fast"):
            spec = parse_cache_spec(getattr(preset.speed, level)) if preset.speed else None
            if spec is not None and spec.method == "magcache":
                assert len(read_mag_ratios(preset.name, preset.path.parent)) >= 2


# ------------------------------------------------------------------------------ compiled blocks
def test_compile_fails_clearly_without_a_compiler(tiny_pipe, monkeypatch):
    import opensora.sampling.compiled_blocks as compiled_blocks

    monkeypatch.setattr(compiled_blocks.shutil, "which", lambda name: None)
    monkeypatch.setattr(tiny_pipe, "compiled_blocks", None)
    with pytest.raises(UserError, match="compile .*cannot run here: inductor needs a C\\+\\+ compiler"):
        tiny_pipe("a cat", seed=1, compile=True)


def test_a_second_generation_reuses_the_compiled_blocks(tiny_pipe, monkeypatch):
    """Dynamo's graphs are counted: the first compiled generation adds some and says how long it took;
    the next one (and one after switching compile off and on again) adds none. The "eager" backend
    keeps the test fast: whether dynamo recompiles does not depend on the backend."""
    from opensora.sampling.compiled_blocks import CompiledBlocks, compiled_graphs

    monkeypatch.setattr(tiny_pipe, "compiled_blocks", CompiledBlocks(tiny_pipe.transformer, backend="eager"))
    eager = tiny_pipe("a cat", seed=4).latents[0]
    before = compiled_graphs()
    first = tiny_pipe("a cat", seed=4, compile=True)
    assert compiled_graphs() > before and "compiled the MMDiT blocks in" in first.notices[0]
    after_first = compiled_graphs()
    second = tiny_pipe("a cat", seed=4, compile=True)
    tiny_pipe("a cat", seed=4)  # off: eager again
    third = tiny_pipe("a cat", seed=4, compile=True)
    assert compiled_graphs() == after_first and second.notices == [] and third.notices == []
    assert second.settings[0]["compile"] is True
    torch.testing.assert_close(second.latents[0], eager, rtol=1e-4, atol=1e-5)
    tiny_pipe.set_compiled(False)


@pytest.mark.slow
def test_inductor_compiles_once_and_matches_eager(tmp_path):
    """The real --compile (inductor, minutes on a busy CPU): twice through the CLI's runner."""
    from opensora.pipeline_cache import PipelineCache
    from opensora.runner import run_job
    from opensora.sampling.compiled_blocks import compiled_graphs

    torch.set_num_threads(1)
    pipelines = PipelineCache(tmp_path / "ckpts", "cpu", "fp32")
    settings = resolve_settings(GenerationRequest(prompt="a cat", seed=3, compile=True), TINY)
    first = run_job(TINY, settings, pipelines, tmp_path / "out")
    graphs = compiled_graphs()
    second = run_job(TINY, settings, pipelines, tmp_path / "out")
    assert any("compiled the MMDiT blocks" in n for n in first.notices)
    assert not any("compiled" in n for n in second.notices) and compiled_graphs() == graphs


# ------------------------------------------------------------------------------ the app's form
def test_the_speed_dropdown_offers_the_presets_speeds_and_reuse_restores_the_cache(tmp_path):
    from app.config import AppConfig
    from app.settings_form import FILL_FIELDS, REQUEST_FIELDS, fill_updates, request_from_form, speed_choices

    assert speed_choices(TINY) == ["quality", "balanced", "fast"]
    assert speed_choices(load_preset("opensora-v2-256px")) == ["quality"]
    config = AppConfig(output_dir=tmp_path / "out", runs_dir=tmp_path / "runs")
    for request in (GenerationRequest(prompt="a cat", seed=1, speed="fast"),
                    GenerationRequest(prompt="a cat", seed=1, cache="pab:every=3", compile=True)):
        settings = resolve_settings(request, TINY)
        reused = GenerationRequest.from_sidecar(settings.to_dict())
        filled = dict(zip(FILL_FIELDS, fill_updates(reused, config, image_tab=False)))
        speed = filled["speed"]
        assert speed["value"] in [c if isinstance(c, str) else c[1] for c in speed["choices"]]
        form = {name: None for name in REQUEST_FIELDS}
        form.update(preset="tiny-random", resolution="tiny", aspect_ratio="16:9", num_frames=9, num_steps=4,
                    guidance=7.5, guidance_img=3.0, motion_score="4", seed=1, random_seed=False, num_samples=1,
                    refine=False, lora="", lora_scale=1.0, speed=speed["value"], compile=filled["compile"])
        again = resolve_settings(request_from_form([form[name] for name in REQUEST_FIELDS], prompt="a cat"), TINY)
        assert (again.speed, again.cache, again.compile) == (settings.speed, settings.cache, settings.compile)
    assert speed["value"] == "pab:every=3,tmin=100,tmax=800" and filled["compile"] is True


# ------------------------------------------------------------------------------ the demo model
def _demo_weights_present() -> bool:
    from opensora.checkpoints import file_status

    return all(s.present for s in file_status(load_preset("demo"), None))


@pytest.mark.skipif(not _demo_weights_present(), reason="bundled demo weights not present (models/demo/)")
def test_balanced_on_the_demo_model_keeps_a_held_out_case_right():
    """As tests/test_demo_model.py checks the uncached sampler: blue triangle moving up on black, seed 0."""
    from opensora.pipeline import OpenSoraPipeline
    from training.demo.evaluation import combo_prompt, to_uint8
    from training.demo.metrics import measure
    from training.demo.shapes_world import HELD_OUT

    torch.set_num_threads(1)
    pipe = OpenSoraPipeline.from_preset("demo")
    combo = HELD_OUT[2]
    result = pipe(combo_prompt(combo, pipe), seed=0, speed="balanced")
    assert result.settings[0]["speed"] == "balanced" and result.settings[0]["cache"]
    m = measure(to_uint8(result.videos[0]))
    assert (m.colour, m.shape, m.motion, m.background) == (combo.colour, combo.shape, combo.motion, combo.background)
    assert m.stable
