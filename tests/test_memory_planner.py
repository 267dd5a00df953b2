"""The memory planner: the table, the choice, the refusal, and predictions against measured RSS."""

from opensora import cli
from opensora.memory.planner import PlanRequest, plan
from opensora.memory.probe import CONFIGS, probe_preset, run_probe
from opensora.presets import load_preset

PROFILES = ["none", "model", "group", "sequential", "disk"]


def run_plan(capsys, *args: str) -> tuple[int, str, str]:
    code = cli.main(["plan", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_table_of_every_profile_and_the_fastest_that_fits(capsys):
    code, out, _ = run_plan(capsys, "--preset", "opensora-v2-256px", "--num-frames", "129", "--vram-gb", "24", "--ram-gb", "64")
    assert code == 0
    assert "opensora-v2-256px: 129 frames at 192x336, bf16" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines()[2:7]}
    assert list(rows) == PROFILES
    assert rows["none"][-1] == "no" and float(rows["none"][1]) > 40  # the official setup needs ~50 GiB
    assert "fastest profile that fits 24.0 GiB GPU / 64.0 GiB RAM: group" in out


def test_a_big_gpu_runs_everything_resident(capsys):
    code, out, _ = run_plan(capsys, "--preset", "opensora-v2-256px", "--num-frames", "129", "--vram-gb", "80", "--ram-gb", "64")
    assert code == 0 and out.strip().endswith(": none")


def test_nothing_fits_names_what_would(capsys):
    code, out, err = run_plan(capsys, "--preset", "opensora-v2-256px", "--num-frames", "129", "--vram-gb", "12", "--ram-gb", "32")
    assert code == 2
    assert "no memory profile fits 12.0 GiB GPU / 32.0 GiB RAM for 129 frames at 192x336" in err
    assert "what would fit: --text-encoder-quant int8 with profile disk" in err
    assert "profile" in out  # the table is printed before the refusal


def test_fewer_frames_is_offered_when_the_gpu_is_the_limit():
    from opensora.memory.planner import what_would_fit

    request = PlanRequest(load_preset("opensora-v2-256px"), 129, 576, 1024)
    assert plan(request).choose(16, 256) is None  # 768px x 129 frames: activations alone pass 16 GiB
    offers = what_would_fit(request, 16, 256)
    assert any(o.startswith("--num-frames ") for o in offers)
    assert any(o.startswith("--resolution 256px (192x336)") for o in offers)


def test_quantised_encoders_and_fp8_lower_the_prediction():
    preset = load_preset("opensora-v2-256px")
    by = lambda **kw: {r.profile: r.gpu_gib for r in plan(PlanRequest(preset, 129, 192, 336, **kw)).rows}  # noqa: E731
    base, int8, nf4, fp8 = by(), by(text_encoder_quant="int8"), by(text_encoder_quant="nf4"), by(fp8_mmdit=True)
    assert nf4["none"] < int8["none"] < base["none"] - 3  # T5-XXL: 8.9 GiB in bf16
    assert fp8["model"] < base["model"] - 5  # 11B MMDiT: 22 GiB in bf16, ~14 in fp8 + bf16 norms


def test_bad_frames_are_refused(capsys):
    code, _, err = run_plan(capsys, "--preset", "tiny-random", "--num-frames", "10")
    assert code == 2 and "num_frames 10 is not allowed: use 4k+1 frames between 1 and 129" in err


def cpu_prediction(config: str, profile: str) -> float:
    c = CONFIGS[config]
    rows = plan(PlanRequest(probe_preset(c), c.num_frames, c.height, c.width, device="cpu", dtype="fp32")).rows
    return next(r.ram_gib for r in rows if r.profile == profile) * 1024  # MiB


def test_tiny_prediction_is_within_15_percent_of_measured_rss():
    measured = run_probe("generate", "--config", "tiny", "--profile", "none")["peak_mib"]
    predicted = cpu_prediction("tiny", "none")
    print(f"tiny none: predicted {predicted:.0f} MiB, measured {measured:.0f} MiB ({predicted / measured - 1:+.1%})")
    assert abs(predicted / measured - 1) <= 0.15
