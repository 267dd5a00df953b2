"""The demo evaluation's pixel measurements are exact on rendered ground truth."""

import numpy as np

from training.demo_metrics import measure, psnr
from training.shapes_world import HELD_OUT, render_clip, sample_spec


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
