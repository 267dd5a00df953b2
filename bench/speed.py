"""Speed and quality of every step cache (and --compile) on the demo model, all in one run. Prints JSON.

    python bench/speed.py                       # ~40 min on a quiet 2-core CPU
    python bench/speed.py --seeds 2 --max-evals 2   # a quicker look

One row per setting: off (= --speed quality), each cache method at 2-3 parameters, --compile and
compile with a cache. Phase 1 (timing + screening) generates each held-out combination at seed 0
with every setting, settings interleaved, one torch thread: the median seconds of the denoising
loop and of the whole generation (CPU seconds of this process, which other work on a shared machine
barely changes; wall seconds beside them), the speed-up over off, and the PSNR of each video against
the uncached one. Phase 2 runs the demo model's held-out evaluation (`evaluate`, `--seeds` seeds per
combination, 64 videos at 8) for off and then for the fastest screened settings until `balanced`
and `fast` are found (at most `--max-evals` evaluations):

- balanced: the fastest whose colour / shape / motion accuracies each lose at most 1 video in 64
  against off and whose median PSNR against off's video of the same seed is >= 30 dB;
- fast: the fastest that loses at most 3 in 64 on each.

Only step caches are chosen (a preset's [speed] names a --cache spec); --compile is measured beside.
"""

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from opensora.pipeline import OpenSoraPipeline  # noqa: E402
from opensora.sampling.cache_spec import parse_cache_spec  # noqa: E402
from opensora.sampling.compiled_blocks import compile_seconds  # noqa: E402
# The demo model's held-out evaluation and pixel metrics: the one place this script imports them from.
from training.demo.evaluation import combo_prompt, evaluate, to_uint8  # noqa: E402
from training.demo.metrics import measure, psnr  # noqa: E402
from training.demo.shapes_world import HELD_OUT  # noqa: E402

CACHES = (
    "first-block:threshold=0.1", "first-block:threshold=0.2", "first-block:threshold=0.3", "first-block:threshold=0.4",
    "taylorseer:interval=2", "taylorseer:interval=3", "taylorseer:interval=4", "taylorseer:interval=5",
    "taylorseer:interval=6",
    "magcache:threshold=0.06", "magcache:threshold=0.12", "magcache:threshold=0.25,max-skip=4",
    "pab:every=2", "pab:every=3,tmin=0,tmax=1000",
    "fastercache:every=2", "fastercache:every=3,tmax=1000",
)
COMPILED_CACHE = "taylorseer:interval=3"  # the combination row: --compile with one cache
METRICS = ("colour", "shape", "motion")
BALANCED_LOSS, FAST_LOSS, BALANCED_PSNR = 1, 3, 30.0  # videos lost per 64, dB


@dataclass
class Setting:
    name: str
    cache: str  # "" = none
    compile: bool = False
    loop_cpu: list = field(default_factory=list)
    loop_wall: list = field(default_factory=list)
    total_cpu: list = field(default_factory=list)
    total_wall: list = field(default_factory=list)
    full_steps: list = field(default_factory=list)
    screen_psnr: list = field(default_factory=list)
    screen_wrong: dict = field(default_factory=lambda: {m: 0 for m in METRICS})
    evaluation: dict | None = None


class LoopTimer:
    """Times `pipe.sample` (the denoising loop) and counts the steps the last block really ran."""

    def __init__(self, pipe: OpenSoraPipeline):
        self.cpu = self.wall = 0.0
        self.full_steps = 0
        original = pipe.sample

        def timed_sample(*args, **kwargs):
            self.full_steps = 0
            cpu, wall = time.process_time(), time.perf_counter()
            out = original(*args, **kwargs)
            self.cpu, self.wall = time.process_time() - cpu, time.perf_counter() - wall
            return out

        pipe.sample = timed_sample
        last_block = pipe.transformer.single_transformer_blocks[-1].proj_out
        last_block.register_forward_hook(lambda *_: setattr(self, "full_steps", self.full_steps + 1))


class SettingPipe:
    """The pipeline as `evaluate` calls it, generating with one setting and keeping each t2v video."""

    def __init__(self, pipe: OpenSoraPipeline, setting: Setting):
        self.pipe, self.setting, self.preset = pipe, setting, pipe.preset
        self.videos: dict[tuple[str, int], object] = {}

    def __call__(self, prompt, **kwargs):
        result = self.pipe(prompt, cache=self.setting.cache, compile=self.setting.compile, **kwargs)
        if kwargs.get("cond_type", "t2v") == "t2v":
            self.videos[(prompt, kwargs["seed"])] = to_uint8(result.videos[0])
        return result


def median(values):
    return round(statistics.median(values), 3) if values else None


def generate_timed(pipe, timer, setting: Setting, prompt: str, seed: int):
    cpu, wall = time.process_time(), time.perf_counter()
    video = pipe(prompt, seed=seed, cache=setting.cache, compile=setting.compile).videos[0]
    setting.total_cpu.append(time.process_time() - cpu)
    setting.total_wall.append(time.perf_counter() - wall)
    setting.loop_cpu.append(timer.cpu)
    setting.loop_wall.append(timer.wall)
    if not setting.compile:  # hooks inside compiled blocks are traced, not called
        setting.full_steps.append(timer.full_steps)
    return to_uint8(video)


def warm_up_compile(pipe, settings: list[Setting], prompt: str) -> dict:
    """Compile before timing: the first generation of each compiled setting (reported, not timed)."""
    seconds = {}
    for setting in settings:
        if setting.compile:
            dynamo, wall = compile_seconds(), time.perf_counter()
            pipe(prompt, seed=0, cache=setting.cache, compile=True)
            seconds[setting.name] = {"wall_s": round(time.perf_counter() - wall, 1),
                                     "dynamo_s": round(compile_seconds() - dynamo, 1)}
    pipe.set_compiled(False)
    return seconds


def screen(pipe, timer, settings: list[Setting], combos: tuple) -> None:
    """The held-out combinations at seed 0 with every setting, the settings' order rotated per combination."""
    for index, combo in enumerate(combos):
        prompt = combo_prompt(combo, pipe)
        order = settings[index % len(settings):] + settings[:index % len(settings)]
        videos = {s.name: generate_timed(pipe, timer, s, prompt, 0) for s in order}
        for setting in settings:
            m = measure(videos[setting.name])
            for metric in METRICS:
                setting.screen_wrong[metric] += getattr(m, metric) != getattr(combo, metric)
            setting.screen_psnr.append(psnr(videos[setting.name], videos["off"]))
        print(f"screened {index + 1}/{len(combos)}", file=sys.stderr, flush=True)


def capped(value: float) -> float:
    """PSNR for JSON: identical videos (inf) as 99 dB."""
    return round(min(value, 99.0), 2)


def run_evaluation(pipe, setting: Setting, seeds: int, reference: dict | None, combos: tuple) -> tuple[dict, dict]:
    """The held-out accuracies of one setting (and its PSNR against `reference`, off's videos), and its videos."""
    started = time.perf_counter()
    wrapped = SettingPipe(pipe, setting)
    with tempfile.TemporaryDirectory() as tmp:
        result = evaluate(wrapped, seeds, None, Path(tmp), combos)
    videos = len(result["per_video"])
    summary = {k: result[k] for k in ("videos", "colour", "shape", "motion", "background", "stable",
                                      "i2v_psnr_frame0_median", "i2v_motion")}
    summary["wrong"] = {m: round((1 - result[m]) * videos) for m in METRICS}
    if reference is not None:
        values = [psnr(video, reference[key]) for key, video in wrapped.videos.items()]
        summary["psnr_vs_off_median"] = capped(statistics.median(values))
        summary["psnr_vs_off_min"] = capped(min(values))
    summary["seconds"] = round(time.perf_counter() - started, 1)
    print(f"evaluated {setting.name} in {summary['seconds']} s", file=sys.stderr, flush=True)
    return summary, wrapped.videos


def loss_within(evaluation: dict, quality: dict, videos: int, allowed: int) -> bool:
    """At most `allowed` videos in 64 lost on each of colour, shape, motion (scaled to `videos`)."""
    return all(evaluation["wrong"][m] - quality["wrong"][m] <= allowed * videos / 64 for m in METRICS)


def choose(pipe, settings: list[Setting], seeds: int, max_evals: int, combos: tuple) -> dict:
    off = settings[0]
    off.evaluation, reference = run_evaluation(pipe, off, seeds, None, combos)
    quality, videos = off.evaluation, off.evaluation["videos"]
    speedup = {s.name: statistics.median(off.loop_cpu) / statistics.median(s.loop_cpu) for s in settings}
    # Candidates: step caches only, fastest first, whose screening does not already rule them out.
    candidates = sorted((s for s in settings[1:] if not s.compile), key=lambda s: -speedup[s.name])
    chosen = {"balanced": None, "fast": None}
    evals = 1
    for setting in candidates:
        if chosen["balanced"] or evals >= max_evals:
            break
        screened_loss = max(setting.screen_wrong[m] - off.screen_wrong[m] for m in METRICS)
        may_be_balanced = statistics.median(setting.screen_psnr) >= BALANCED_PSNR and screened_loss <= 1
        if (chosen["fast"] and not may_be_balanced) or screened_loss > 2:
            continue
        setting.evaluation, _ = run_evaluation(pipe, setting, seeds, reference, combos)
        evals += 1
        if not chosen["fast"] and loss_within(setting.evaluation, quality, videos, FAST_LOSS):
            chosen["fast"] = setting.name
        if loss_within(setting.evaluation, quality, videos, BALANCED_LOSS) \
                and setting.evaluation["psnr_vs_off_median"] >= BALANCED_PSNR:
            chosen["balanced"] = setting.name
    return chosen


def row(setting: Setting, off: Setting, compiled: dict) -> dict:
    base_loop, base_total = statistics.median(off.loop_cpu), statistics.median(off.total_cpu)
    return {
        "setting": setting.name, "cache": parse_cache_spec(setting.cache).text if setting.cache else "",
        "compile": setting.compile,
        "loop_cpu_s": median(setting.loop_cpu), "loop_wall_s": median(setting.loop_wall),
        "generation_cpu_s": median(setting.total_cpu), "generation_wall_s": median(setting.total_wall),
        "speedup_loop": round(base_loop / statistics.median(setting.loop_cpu), 2),
        "speedup_generation": round(base_total / statistics.median(setting.total_cpu), 2),
        "full_steps": median(setting.full_steps),
        "screen_psnr_median": capped(statistics.median(setting.screen_psnr)) if setting is not off else None,
        "screen_psnr_min": capped(min(setting.screen_psnr)) if setting is not off else None,
        "screen_wrong": setting.screen_wrong,
        "compile_s": compiled.get(setting.name),
        "held_out": setting.evaluation,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=8, help="seeds per held-out combination in phase 2 (8: 64 videos)")
    parser.add_argument("--max-evals", type=int, default=5, help="held-out evaluations at most, off included")
    parser.add_argument("--combos", type=int, default=len(HELD_OUT), help="held-out combinations used in both "
                        f"phases (default all {len(HELD_OUT)}; fewer: a quick smoke run)")
    parser.add_argument("--no-compile", action="store_true", help="leave out the --compile rows")
    args = parser.parse_args()
    torch.set_num_threads(1)  # the cores are shared: one thread, CPU seconds, medians
    started = time.perf_counter()
    pipe = OpenSoraPipeline.from_preset("demo")
    timer = LoopTimer(pipe)
    settings = [Setting("off", ""), *(Setting(c, c) for c in CACHES)]
    if not args.no_compile:
        settings += [Setting("compile", "", True), Setting(f"compile+{COMPILED_CACHE}", COMPILED_CACHE, True)]
    prompt = combo_prompt(HELD_OUT[0], pipe)
    pipe(prompt, seed=0)  # warm-up
    compiled = warm_up_compile(pipe, settings, prompt)
    combos = HELD_OUT[:args.combos]
    screen(pipe, timer, settings, combos)
    chosen = choose(pipe, settings, args.seeds, args.max_evals, combos)
    print(json.dumps({
        "preset": "demo", "threads": 1, "steps": pipe.preset.sampler.num_steps,
        "timing": f"medians over {len(combos)} held-out combinations at seed 0; speed-ups from CPU seconds",
        "attention": "sdpa (the only backend on a CPU; --attention picks one on a GPU)",
        "rows": [row(s, settings[0], compiled) for s in settings],
        "chosen": chosen,
        "rule": {"balanced": f"fastest cache losing <= {BALANCED_LOSS}/64 videos on each of colour/shape/motion "
                             f"and PSNR vs off >= {BALANCED_PSNR} dB (median)",
                 "fast": f"fastest cache losing <= {FAST_LOSS}/64 on each"},
        "seconds": round(time.perf_counter() - started, 1),
    }))


if __name__ == "__main__":
    main()
