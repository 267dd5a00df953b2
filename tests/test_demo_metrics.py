"""The demo evaluation's pixel measurements are exact on rendered ground truth."""

import numpy as np

from training.demo.metrics import measure, psnr
from training.demo.shapes_world import HELD_OUT, render_clip, sample_spec


def test_measurements_match_the_render_parameters():
    rng = np.random.default_rng(0)
    wrong = []
    for i in range(60):
        spec = sample_spec(rng, held_out=i % 2 == 0)
        m = measure(render_clip(spec))
        got = (m.colour, m.shape, m.motion, m.background)
        if got != (spec.colour, spec.shape, spec.motion, spec.background) or not m.stable:
            wrong.append((spec, m))
    assert not wrong, wrong[:2]


def test_no_object_is_reported():
    m = measure(np.zeros((9, 32, 32, 3), np.uint8))
    assert not m.object_found and not m.stable and m.colour == "none"


def test_psnr():
    a = np.full((8, 8, 3), 100, np.uint8)
    b = a.copy()
    b[0, 0, 0] = 110
    assert psnr(a, a) == float("inf")
    assert 40 < psnr(a, b) < 60
    assert len(HELD_OUT) == 8


def test_seen_controls_mirror_the_held_out_set_and_have_references():
    from training.demo.evaluation import COMBO_SETS, SEEN_CONTROLS, reference_first_frame
    from training.demo.shapes_world import is_held_out

    assert COMBO_SETS["held-out"] == HELD_OUT and COMBO_SETS["seen"] == SEEN_CONTROLS
    assert not any(is_held_out(c) for c in SEEN_CONTROLS)
    # Same shapes, motions and backgrounds, in the same order; only the colour differs.
    assert [(c.shape, c.motion, c.background) for c in SEEN_CONTROLS] == [
        (c.shape, c.motion, c.background) for c in HELD_OUT
    ]
    assert all(s.colour != h.colour for s, h in zip(SEEN_CONTROLS, HELD_OUT))
    for combo in (SEEN_CONTROLS[0], HELD_OUT[0]):
        spec, first = reference_first_frame(combo, seed=3, height=128, width=128)
        assert spec.combo == combo and first.shape == (128, 128, 3)
        m = measure(render_clip(spec))
        assert (m.colour, m.shape, m.background) == (combo.colour, combo.shape, combo.background)


def test_evaluation_runs_the_asked_seeds_and_reports_them(tmp_path):
    """`--first-seed` moves the seed window, so a choice made on seeds 0-7 can be checked on 8-15."""
    from opensora.pipeline import OpenSoraPipeline
    from training.demo.evaluation import evaluate

    pipe = OpenSoraPipeline.from_preset("demo")
    result = evaluate(pipe, seeds=2, num_steps=2, reference_dir=tmp_path, combos=HELD_OUT[:1], first_seed=5)
    assert [row["seed"] for row in result["per_video"]] == [5, 6]
    assert result["seed_range"] == [5, 6] and result["videos"] == 2 and len(result["i2v"]) == 1
    assert all(0.0 <= result[k] <= 1.0 for k in ("colour", "shape", "motion", "background", "stable"))
    # Same seed, same video: the window starting at 6 begins with the second video above.
    again = evaluate(pipe, seeds=1, num_steps=2, reference_dir=tmp_path, combos=HELD_OUT[:1], first_seed=6)
    assert again["per_video"][0]["fill_ratio"] == result["per_video"][1]["fill_ratio"]


def test_eval_demo_subcommand_refuses_an_empty_seed_window(capsys):
    from training.cli import main

    for argv in (["--seeds", "0"], ["--first-seed", "-1"]):
        assert main(["eval-demo", *argv]) == 2
    err = capsys.readouterr().err
    assert "--seeds must be >= 1 (got 0)" in err and "--first-seed >= 0 (got -1)" in err

