"""Live preview while sampling (#31.2): the latent -> RGB fit, x0 from consecutive latents, the
demo model's preview against its real VAE decode, previews every few steps through the runner,
off with one notice without preview data, and the fit-preview command."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from opensora.cli import main
from opensora.generation_settings import GenerationRequest, resolve_settings
from opensora.pipeline_cache import PipelineCache
from opensora.presets import load_preset
from opensora.preview import live, projection as projection_data
from opensora.preview.files import PreviewFiles
from opensora.preview.fit import fit_projection, latent_frame_groups, pixels_at_latent_size, project, psnr
from opensora.preview.live import LatentPreview, preview_every
from opensora.preview.projection import load_projection, read_projection
from opensora.runner import run_job

# The demo preview (the linear map, at latent size) against the real VAE decode of the same x0, brought to
# latent size. Measured on 4 prompts (17 frames, 20 steps): 22.4-28.2 dB after the last step, 19.1-22.4
# half-way (step 10, sigma 0.86), 17.4-21.4 at step 4 (sigma 0.96); this test's run: 22.85 and 19.78.
DEMO_FLOOR_DB = {"final": 21.0, "mid-run": 18.0}


class RecordingProgress:
    """The runner's Progress with a preview hook: which step each preview followed, and its frames."""

    def __init__(self):
        self.step, self.previews, self.messages = None, [], []
        self.preview = self._preview

    def message(self, text):
        self.messages.append(text)

    def begin(self, num_samples):
        pass

    def __call__(self, step, total, latent=None):
        self.step = step

    def _preview(self, frames, frame_seconds):
        self.previews.append((self.step, frames, frame_seconds))


def test_latent_frame_groups_causal_and_plain():
    causal = latent_frame_groups(33, 9, 4)
    assert [(g.start, g.stop) for g in causal[:3]] == [(0, 1), (1, 5), (5, 9)] and causal[-1] == range(29, 33)
    assert latent_frame_groups(9, 3, 4) == [range(0, 1), range(1, 5), range(5, 9)]  # not 3 groups of 3
    assert latent_frame_groups(32, 8, 4)[1] == range(4, 8)  # the Video DC-AE's decode: 4 frames each


def test_fit_recovers_a_known_linear_map():
    """Pixels made from latents by a known map (each latent pixel's colour repeated over its 8x8
    block and its causal frame group): the fit finds that map again."""
    generator = torch.Generator().manual_seed(0)
    weights = torch.randn(6, 3, generator=generator) * 0.2
    bias = torch.tensor([0.1, -0.2, 0.05])
    latents, pixels = [], []
    for _ in range(3):
        latent = torch.randn(6, 3, 4, 5, generator=generator)
        colours = torch.einsum("cthw,cr->rthw", latent, weights) + bias[:, None, None, None]
        frames = torch.cat([colours[:, :1], colours[:, 1:].repeat_interleave(4, dim=1)], dim=1)  # 9 frames
        video = frames.repeat_interleave(8, dim=2).repeat_interleave(8, dim=3)  # (3, 9, 32, 40)
        latents.append(latent)
        pixels.append(pixels_at_latent_size(video, latent.shape, 4))
    found_weights, found_bias = fit_projection(latents, pixels)
    torch.testing.assert_close(found_weights, weights, atol=1e-5, rtol=0)
    torch.testing.assert_close(found_bias, bias, atol=1e-5, rtol=0)


def test_the_sampler_predicts_x0_exactly_on_a_straight_flow():
    """A model whose velocity is noise - x0 (the flow-matching target): the sampler's prediction hook
    gives x0 itself at every step, just before the step callback hears that step."""
    from opensora.sampling.denoise import GuidanceOptions, denoise
    from opensora.sampling.schedule import make_scheduler

    generator = torch.Generator().manual_seed(1)
    clean, noise = torch.randn(2, 1, 6, 8, generator=generator)
    heard = []

    def model_fn(img, cond, txt, y_vec, timesteps, img_ids):
        return (noise - clean).repeat(3, 1, 1)

    denoise(model_fn, noise, None, None, None, None, make_scheduler(6, 3, 2), GuidanceOptions(),
            temporal_ramp=False, latent_frames=2, callback=lambda i, n, x: heard.append(("step", i)),
            prediction=lambda i, n, clean_latent: heard.append(("x0", i, clean_latent())))
    assert [h[:2] for h in heard] == [(kind, i) for i in range(6) for kind in ("x0", "step")]
    for _, _, x0 in (h for h in heard if h[0] == "x0"):
        torch.testing.assert_close(x0, clean, atol=1e-5, rtol=0)


def demo_previews_against_the_decode(num_frames: int):
    """{"mid-run" / "final": PSNR of the preview against the real decode of the same x0, both at latent
    size} of a demo run through the pipeline's prediction hook."""
    from opensora.refine import prepare_prompt

    preset = load_preset("demo")
    pipe = PipelineCache("ckpts", "cpu", "fp32").get(preset)
    settings = resolve_settings(GenerationRequest(prompt="a red circle moving right on a gray background",
                                                  preset="demo", num_frames=num_frames, seed=3), preset)
    preview = LatentPreview(load_projection(preset))
    predicted, frames = {}, {}

    class Callback:
        def prediction(self, step, total, clean_latent):
            if (shown := preview(step, total, clean_latent)) is not None:
                predicted[step], frames[step] = clean_latent(), shown

        def __call__(self, step, total, latent):
            pass

    prepared = prepare_prompt(settings.prompt, refine=False, motion_score=settings.motion_score,
                              vocabulary=preset.prompt.vocabulary, fps=settings.fps)
    pipe.generate(settings, prepared, callback=Callback())
    every = preview_every(settings.num_steps)
    assert sorted(frames) == [s for s in range(settings.num_steps) if (s + 1) % every == 0]
    results = {}
    for name, step in (("mid-run", settings.num_steps // 2 - 1), ("final", settings.num_steps - 1)):
        with torch.no_grad():
            decoded = pipe.vae.decode(predicted[step])[0].clamp(-1, 1)
        reference = pixels_at_latent_size(decoded, predicted[step].shape[1:], preset.vae.time_compression)
        shown = torch.from_numpy(frames[step]).permute(3, 0, 1, 2).float() / 127.5 - 1
        results[name] = psnr(shown, reference)
    return results


def test_demo_preview_is_close_to_the_real_decode_mid_run_and_at_the_end():
    results = demo_previews_against_the_decode(num_frames=17)
    print("demo preview PSNR vs the real decode (dB):", {k: round(v, 2) for k, v in results.items()})
    for name, value in results.items():
        assert value > DEMO_FLOOR_DB[name], f"{name}: {value:.2f} dB"


@pytest.mark.parametrize("name", ["tiny-random", "tiny-random-hc"])  # HunyuanVideo VAE / Video DC-AE latents
def test_previews_come_every_few_steps_through_the_runner(tmp_path, name):
    preset = load_preset(name)
    settings = resolve_settings(GenerationRequest(prompt="a cat", preset=name, num_steps=20, seed=0), preset)
    progress = RecordingProgress()
    run_job(preset, settings, PipelineCache(tmp_path / "ckpts", "cpu", "fp32"), tmp_path / "out", progress)
    every = preview_every(20)
    assert every == 2
    assert [step for step, _, _ in progress.previews] == list(range(1, 20, 2))  # after steps 2, 4, ..., 20
    latent_frames = preset.vae.latent_frames(settings.num_frames)
    height, width = (s // preset.vae.spatial_compression for s in (settings.height, settings.width))
    for _, frames, frame_seconds in progress.previews:
        assert frames.shape == (latent_frames, height, width, 3) and frames.dtype == np.uint8
        assert frame_seconds == pytest.approx(preset.vae.time_compression / settings.fps)
    assert len({frames.tobytes() for _, frames, _ in progress.previews}) == len(progress.previews)


def test_without_preview_data_the_preview_is_off_with_one_notice(tmp_path, monkeypatch):
    monkeypatch.setattr(projection_data, "PREVIEW_DATA_DIR", tmp_path / "no-data")
    monkeypatch.setattr(live, "_REPORTED_MISSING", set())
    preset = load_preset("tiny-random")
    settings = resolve_settings(GenerationRequest(prompt="a cat", preset="tiny-random", num_steps=3, seed=0), preset)
    pipelines = PipelineCache(tmp_path / "ckpts", "cpu", "fp32")
    notices = []
    for _ in range(2):
        progress = RecordingProgress()
        notices.append(run_job(preset, settings, pipelines, tmp_path / "out", progress).notices)
        assert progress.previews == []
    first = [n for n in notices[0] if n.startswith("live preview off")]
    assert first == ["live preview off: no latent -> RGB preview data for the VAE of preset tiny-random "
                     "(presets/preview/tiny-random.toml); `python -m opensora fit-preview --preset tiny-random` "
                     "makes it where the VAE weights are"]
    assert not [n for n in notices[1] if n.startswith("live preview")]


def test_a_progress_without_a_preview_hook_gets_no_preview_and_no_notice(tmp_path, monkeypatch):
    monkeypatch.setattr(projection_data, "PREVIEW_DATA_DIR", tmp_path / "no-data")
    monkeypatch.setattr(live, "_REPORTED_MISSING", set())
    preset = load_preset("tiny-random")
    settings = resolve_settings(GenerationRequest(prompt="a cat", preset="tiny-random", num_steps=2, seed=0), preset)
    result = run_job(preset, settings, PipelineCache(tmp_path / "ckpts", "cpu", "fp32"), tmp_path / "out")
    assert not [n for n in result.notices if n.startswith("live preview")]


def test_official_vae_has_no_data_here_and_names_the_file():
    preset = load_preset("opensora-v2-256px")
    assert projection_data.preview_data_name(preset) == "hunyuan_vae"
    assert load_projection(preset) is None
    assert projection_data.preview_data_name(load_preset("opensora-v2-768px")) == "hunyuan_vae"  # one VAE file


def test_preview_files_are_animated_webps_with_new_names_and_only_the_newest_kept(tmp_path):
    files = PreviewFiles(tmp_path, keep=2)
    frames = np.random.default_rng(0).integers(0, 255, (5, 4, 7, 3), dtype=np.uint8)
    paths = []
    for _ in range(4):
        files(frames, 0.25)
        files.flush()  # written on its own thread
        paths.append(files.latest)
    assert len(set(paths)) == 4
    assert sorted(tmp_path.glob("*.webp")) == sorted(paths[-2:])
    with Image.open(paths[-1]) as image:
        image.load()  # the frame's duration is read with it
        assert (image.format, image.n_frames, image.size, image.info["duration"], image.info["loop"]) == \
            ("WEBP", 5, (7, 4), 250, 0)


def test_shipped_preview_data_has_one_row_per_latent_channel():
    for name in ("demo", "tiny-random", "tiny-random-hc"):
        preset = load_preset(name)
        data = load_projection(preset)
        assert data.latent_channels == preset.vae.latent_channels
        assert data.made_by == f"python -m opensora fit-preview --preset {name}"
        assert data.heldout_psnr_db > 10


@pytest.mark.parametrize("name", ["tiny-random", pytest.param("tiny-random-hc", marks=pytest.mark.slow),
                                  pytest.param("demo", marks=pytest.mark.slow)])  # the demo: minutes
def test_fit_preview_command_reproduces_the_shipped_data(tmp_path, capsys, name):
    out = tmp_path / f"{name}.toml"
    assert main(["fit-preview", "--preset", name, "--out", str(out)]) == 0
    assert "held-out PSNR" in capsys.readouterr().out
    made, shipped = read_projection(out), load_projection(load_preset(name))
    np.testing.assert_allclose(made.weights, shipped.weights, atol=1e-3)
    np.testing.assert_allclose(made.bias, shipped.bias, atol=1e-3)
    assert math.isclose(made.heldout_psnr_db, shipped.heldout_psnr_db, abs_tol=0.02)


@pytest.mark.parametrize("argv, message", [
    (["--preset", "tiny-random", "--frames", "16"], "--frames 16 is not allowed: use 4k+1 from 5 to 129"),
    (["--preset", "tiny-random", "--clips", "2"], "--clips 2 is out of range: use 4-1024"),
    (["--preset", "tiny-random", "--video", "a.mp4"], "--video: give at least 2 videos"),
    (["--preset", "opensora-v1-2"], "the live preview is for Open-Sora 2.0 presets"),
])
def test_fit_preview_bad_values_are_one_line(argv, message, capsys):
    assert main(["fit-preview", *argv]) == 2
    assert message in capsys.readouterr().err


def test_fit_preview_of_the_official_vae_names_the_missing_file(tmp_path, capsys):
    assert main(["fit-preview", "--preset", "opensora-v2-256px", "--ckpt-dir", str(tmp_path)]) == 2
    assert "hunyuan_vae.safetensors" in capsys.readouterr().err


def test_project_clamps_to_the_pixel_range():
    weights, bias = torch.tensor([[10.0, -10.0, 0.0]]), torch.zeros(3)
    rgb = project(torch.ones(1, 1, 2, 2), weights, bias)
    assert rgb[0].max() == 1 and rgb[1].min() == -1


def test_generate_writes_the_preview_file_with_preview(tmp_path):
    out = tmp_path / "live.webp"
    assert main(["generate", "--preset", "tiny-random", "--prompt", "a cat", "--num-steps", "4",
                 "--output-dir", str(tmp_path / "out"), "--preview", str(out)]) == 0
    with Image.open(out) as image:
        assert image.format == "WEBP" and image.size == (8, 4)  # the 64x32 video at latent size
    assert sorted(p.name for p in tmp_path.iterdir()) == ["live.webp", "out"]  # no temp file left behind


class ScriptedJobs:
    """A GenerateHandler stand-in for app/live_preview.py: one session job whose (state, newest preview)
    moves one entry of `script` forward each time the watcher reads the job."""

    def __init__(self, script):
        from types import SimpleNamespace

        self.script, self.at = script, -1
        self.previews = SimpleNamespace(latest=None)
        self.queue = SimpleNamespace(get=self._get)
        self.worker = SimpleNamespace(progress={"job": SimpleNamespace(preview=self.previews)})

    def session_jobs(self, request):
        return ["job"]

    def _get(self, job_id):
        from types import SimpleNamespace

        self.at = min(self.at + 1, len(self.script) - 1)
        state, self.previews.latest = self.script[self.at]
        return SimpleNamespace(state=state)


def shown(updates):
    return [(u.get("value"), u.get("visible")) for u in updates]


def test_the_result_column_follows_the_job_and_hides_the_preview_when_the_video_is_done():
    from app.live_preview import follow_previews

    jobs = ScriptedJobs([("queued", None), ("running", "a.webp"), ("running", "a.webp"), ("running", "b.webp"),
                         ("done", "c.webp")])
    assert shown(follow_previews(jobs, None, poll_s=0)) == [
        (None, False), ("a.webp", True), ("b.webp", True), (None, False)]


def test_a_cancelled_job_keeps_its_last_preview_even_one_written_just_before_the_end():
    from app.live_preview import follow_previews

    jobs = ScriptedJobs([("running", "a.webp"), ("cancelled", "b.webp")])
    assert shown(follow_previews(jobs, None, poll_s=0)) == [(None, False), ("a.webp", True), ("b.webp", True)]
