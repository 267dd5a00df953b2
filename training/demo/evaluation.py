"""Held-out evaluation of the bundled demo model (`python -m training eval-demo`).

Generates videos for the (colour, shape, motion, background) combinations the training renderer
never produced (`training.demo.shapes_world.HELD_OUT`), measures each from its pixels
(`training.demo.metrics.measure`) and returns the accuracies:

- colour: nearest palette colour of the object's pixels equals the prompt's;
- shape: fill ratio of the object's bounding box closest to the prompt's shape;
- motion: centroid displacement first -> last frames gives the prompt's direction (or still);
- stable: the object is present in every frame and its area varies little (no flicker);
- i2v: image-to-video from a rendered first frame of each held-out combo: PSNR of frame 0 and
  whether the object moves as the prompt says.

`--combos seen` runs the same measurements on `SEEN_CONTROLS`, combinations training did render,
with the held-out set's shapes, motions and backgrounds: a score that is low on both sets is a
rendering problem, one that is low only on the held-out set a failure to combine.
"""

import statistics
import time

import numpy as np
import torch

from opensora.pipeline import OpenSoraPipeline
from opensora.refine import prepare_prompt, shapes_world_caption
from training.demo.metrics import measure, psnr
from training.demo.shapes_world import COLOURS, HELD_OUT, ClipSpec, Combo, is_held_out, render_clip, sample_spec


def to_uint8(video: torch.Tensor) -> np.ndarray:
    """(3, T, H, W) in [-1, 1] -> (T, H, W, 3) uint8, as written to the mp4."""
    return ((video.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 3, 0).numpy()


def _next_colour(colour: str) -> str:
    names = list(COLOURS)
    return names[(names.index(colour) + 1) % len(names)]


# Each held-out combination with the next palette colour: training rendered these.
SEEN_CONTROLS: tuple[Combo, ...] = tuple(
    Combo(_next_colour(c.colour), c.shape, c.motion, c.background) for c in HELD_OUT
)
COMBO_SETS = {"held-out": HELD_OUT, "seen": SEEN_CONTROLS}


def reference_first_frame(combo: Combo, seed: int, height: int, width: int) -> tuple[ClipSpec, np.ndarray]:
    """A rendered clip of `combo` at height x width: its spec and first frame (the i2v reference)."""
    rng = np.random.default_rng(seed)
    # Drawn as the renderer draws them; a seen combination is 1 in ~700 draws, hence the many tries.
    for _ in range(20000):
        spec = sample_spec(rng, held_out=is_held_out(combo))
        if spec.combo == combo and (spec.height, spec.width) == (height, width):
            return spec, render_clip(spec)[0]
    raise RuntimeError(f"no spec drawn for {combo} at {height}x{width}")


def combo_prompt(combo: Combo, pipe: OpenSoraPipeline) -> str:
    """The caption of `combo` as the CLI and the app would send it (refined, with the preset's motion score)."""
    sampler = pipe.preset.sampler
    caption = shapes_world_caption(combo.colour, combo.shape, combo.motion, combo.background)
    return prepare_prompt(caption, refine=False, motion_score=sampler.motion_score,
                          vocabulary=pipe.preset.prompt.vocabulary, fps=sampler.fps).text


def evaluate(
    pipe: OpenSoraPipeline, seeds: int, num_steps: int | None, reference_dir, combos: tuple[Combo, ...] = HELD_OUT,
    first_seed: int = 0,
) -> dict:
    rows, i2v_rows = [], []
    height, width = pipe.preset.image_size(pipe.preset.sampler.resolution, "1:1")
    for combo in combos:
        prompt = combo_prompt(combo, pipe)
        for seed in range(first_seed, first_seed + seeds):
            started = time.perf_counter()
            video = pipe(prompt, seed=seed, num_steps=num_steps).videos[0]
            m = measure(to_uint8(video))
            rows.append({"combo": combo.__dict__, "seed": seed, "seconds": time.perf_counter() - started, **m.to_dict()})

        spec, first = reference_first_frame(combo, seed=1000 + len(i2v_rows), height=height, width=width)
        path = reference_dir / f"{combo.colour}-{combo.shape}-{combo.motion}-{combo.background}.png"
        from PIL import Image

        Image.fromarray(first).save(path)
        video = pipe(prompt, cond_type="i2v_head", reference=str(path), seed=0, num_steps=num_steps).videos[0]
        frames = to_uint8(video)
        m = measure(frames)
        i2v_rows.append({"combo": combo.__dict__, "psnr_frame0": psnr(frames[0], first), **m.to_dict()})

    def accuracy(items, key, expected):
        return sum(r[key] == expected(r) for r in items) / len(items)

    return {
        "combos": len(combos),
        "held_out": all(is_held_out(c) for c in combos),
        "videos": len(rows),
        "seed_range": [first_seed, first_seed + seeds - 1],
        "colour": accuracy(rows, "colour", lambda r: r["combo"]["colour"]),
        "shape": accuracy(rows, "shape", lambda r: r["combo"]["shape"]),
        "motion": accuracy(rows, "motion", lambda r: r["combo"]["motion"]),
        "background": accuracy(rows, "background", lambda r: r["combo"]["background"]),
        "stable": sum(r["stable"] for r in rows) / len(rows),
        "i2v_psnr_frame0_median": statistics.median(r["psnr_frame0"] for r in i2v_rows),
        "i2v_psnr_frame0_min": min(r["psnr_frame0"] for r in i2v_rows),
        "i2v_motion": accuracy(i2v_rows, "motion", lambda r: r["combo"]["motion"]),
        "i2v_colour": accuracy(i2v_rows, "colour", lambda r: r["combo"]["colour"]),
        "seconds_per_video_median": statistics.median(r["seconds"] for r in rows),
        "per_video": rows,
        "i2v": i2v_rows,
    }
