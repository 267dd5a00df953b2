"""The demo model's recipe: every step that makes models/demo/, in order, as `python -m training` commands.

It follows the lineage of the shipped weights (training/demo/HISTORY.md, "The recipe") with the
committed configs: the shapes-world data, the text encoders, the shape-code VAE (runs B-E and
decoder H), the MMDiT from random weights (runs 1-10 and the growth step, then the GPU runs
25-32), the decoder runs J-O on the MMDiT's own latents, the mean of runs 29-32, the shards, and
the held-out evaluation. `full` is the HISTORY's sizes (a GPU session: `--device cuda`); `smoke`
runs every step at tiny sizes on a CPU, to check that the chain holds together.

Each step declares the files it writes; a step whose files all exist is skipped, and the
trainers resume from their checkpoints, so a stopped recipe continues where it was.
"""

from __future__ import annotations

import csv
import gc
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from opensora.errors import UserError
from opensora.presets import PRESET_DIR
from training.demo.preset_copies import set_toml_values

SCALES = ("smoke", "full")
DEMO_PRESET = PRESET_DIR / "demo.toml"
# smoke: the demo architecture at a fraction of its width (6 latent channels, so the shape code's 3 fit
# beside the colour), single blocks 4 -> 8 become 1 -> 2, 9-frame clips and 5-frame videos in the eval.
SMOKE_MODEL = {
    "mmdit": {"in_channels": 6 * 4 * 4, "hidden_size": 96, "num_heads": 2, "axes_dim": [16, 16, 16], "depth": 1},
    "vae": {"block_out_channels": [8, 8, 8, 8], "norm_num_groups": 1, "latent_channels": 6},
    "sampler": {"num_frames": 5},
}
SMOKE_THREADS = ("--threads", 1)  # one torch thread per step: tiny tensors gain nothing from more


@dataclass(frozen=True)
class Step:
    name: str
    what: str  # the line `--dry-run` prints: what it makes, and which HISTORY run it stands for
    outputs: tuple[str, ...]  # files (relative to OUT) that exist once it has run
    argv: tuple[str, ...] = ()  # `python -m training ARGV`; empty for a file step
    write: Callable[[Path], None] | None = field(default=None, compare=False)  # a file step's action

    def command(self, out: Path) -> str:
        if self.argv:
            return "python -m training " + " ".join(self.argv)
        return f"(writes {', '.join(str(out / o) for o in self.outputs)})"


@dataclass(frozen=True)
class Scale:
    """The HISTORY's sizes (full) or tiny ones that run in seconds (smoke)."""

    name: str

    def pick(self, full, smoke):
        return full if self.name == "full" else smoke

    @property
    def smoke(self) -> bool:
        return self.name == "smoke"


class Recipe:
    """The steps for OUT, at `scale`, on `device` (cpu or cuda)."""

    def __init__(self, out: Path, scale: str = "full", device: str = "cpu"):
        if scale not in SCALES:
            raise UserError(f"scale is {scale!r}; allowed: {', '.join(SCALES)}")
        if device not in ("cpu", "cuda"):
            raise UserError(f"device is {device!r}; allowed: cpu, cuda")
        self.out, self.scale, self.device = Path(out).resolve(), Scale(scale), device
        self.steps: list[Step] = []
        self._build()

    # ------------------------------------------------------------------ helpers

    def path(self, relative: str) -> str:
        return str(self.out / relative)

    def add(self, name: str, what: str, outputs: tuple[str, ...], argv: tuple[str, ...] = (),
            write: Callable[[Path], None] | None = None) -> None:
        self.steps.append(Step(name, what, outputs, tuple(str(a) for a in argv), write))

    def preset(self, name: str, mmdit: str | None = None, vae: str | None = None, depth_single_blocks: int | None = None,
               models: str = "models/demo") -> str:
        """A file step writing OUT/presets/NAME.toml: presets/demo.toml naming this recipe's files."""
        relative = f"presets/{name}.toml"

        def write(out: Path) -> None:
            text = DEMO_PRESET.read_text(encoding="utf-8")
            files = {"t5": str(out / models / "t5"), "clip": str(out / models / "clip")}
            if mmdit:
                files["mmdit"] = str(out / mmdit)
            if vae:
                files["vae"] = str(out / vae)
            text = set_toml_values(text, "files", files)
            blocks = depth_single_blocks
            if self.scale.smoke:
                for table, values in SMOKE_MODEL.items():
                    text = set_toml_values(text, table, values)
                blocks = (depth_single_blocks or 8) // 4
            if blocks is not None:
                text = set_toml_values(text, "mmdit", {"depth_single_blocks": blocks})
            (out / "presets").mkdir(parents=True, exist_ok=True)
            (out / relative).write_text(text, encoding="utf-8")

        uses = ", ".join(f"{k} = {v}" for k, v in (("mmdit", mmdit), ("vae", vae),
                                                    ("depth_single_blocks", depth_single_blocks)) if v)
        self.add(f"preset {name}", f"presets/demo.toml naming {uses or 'the recipe text encoders'}", (relative,),
                 write=write)
        return self.path(relative)

    def render(self, name: str, num: int, seed: int) -> str:
        s = self.scale
        self.add(f"render {name}", f"{num} shapes-world clips, seed {seed}", (f"data/{name}/data.csv",),
                 ("render-shapes", "--out", self.path(f"data/{name}"), "--num", s.pick(num, 1), "--seed", seed,
                  "--frames", s.pick(33, 9), "--num-images", 0))
        return self.path(f"data/{name}/data.csv")

    def join_csv(self, name: str, parts: list[tuple[str, int | None]]) -> str:
        """A file step: the rows of several data.csv files (the first `rows` of each, None = all) in one CSV."""
        relative = f"data/{name}.csv"

        def write(out: Path) -> None:
            header, rows = None, []
            for folder, limit in parts:
                with open(out / "data" / folder / "data.csv", newline="", encoding="utf-8") as f:
                    reader = csv.DictReader(f)
                    header = reader.fieldnames
                    for i, row in enumerate(reader):
                        if limit is not None and i >= limit:
                            break
                        rows.append({**row, "path": f"{folder}/{row['path']}"})
            with open(out / relative, "w", newline="", encoding="utf-8") as f:
                writer = csv.DictWriter(f, fieldnames=header)
                writer.writeheader()
                writer.writerows(rows)

        what = " + ".join(f"{folder}" + (f" (first {limit})" if limit else "") for folder, limit in parts)
        self.add(f"join {name}", what, (relative,), write=write)
        return self.path(relative)

    def text_encoders(self) -> None:
        s = self.scale
        self.add("text encoders", "tokenizer + T5 + CLIP, 1000 steps (HISTORY: Text encoders)",
                 ("models/demo/t5/config.json", "models/demo/clip/config.json"),
                 ("train-text-encoders", "--out", self.path("models/demo"), "--steps", s.pick(1000, 2),
                  "--num-captions", s.pick(6000, 60), "--work-dir", self.path("runs/text"), *s.pick((), SMOKE_THREADS)))

    def vae(self, name: str, what: str, preset: str, init: str, steps: int, *flags) -> str:
        s = self.scale
        sizes = () if not s.smoke else ("--crop-size", 32, "--crop-frames", 5, "--batch-size", 1,
                                        "--image-batch-size", 1, "--eval-clips", 1, "--eval-frames", 1, *SMOKE_THREADS)
        if s.smoke:  # smoke: drop the full run's sizes for the tiny ones above
            flags = _without(flags, ("--crop-size", "--crop-frames", "--batch-size", "--eval-clips", "--data-workers"))
        weights = f"runs/vae-{name}/vae.safetensors"
        self.add(f"vae {name}", what, (weights,),
                 ("train-vae", "--preset", preset, "--init", init, "--out", self.path(weights),
                  "--work-dir", self.path(f"runs/vae-{name}"), "--steps", s.pick(steps, 1), *flags, *sizes,
                  "--device", self.device, "--no-update-preset", "--resume", "auto"))
        return self.path(weights)

    def mmdit(self, name: str, what: str, preset: str, data: str, steps: int, config: str = "demo",
              init: str = "preset", *flags) -> str:
        s = self.scale
        if s.smoke:
            flags = (*_without(flags, ("--buckets",)), "--buckets", "demo-smoke", "--eval-every", 0, *SMOKE_THREADS)
        weights = f"runs/mmdit-{name}/model.safetensors"
        self.add(f"mmdit {name}", what, (weights,),
                 ("finetune", "--config", config, "--preset", preset, "--init", init, "--data", data,
                  "--output-dir", self.path(f"runs/mmdit-{name}"), "--steps", s.pick(steps, 1),
                  "--cache-dir", self.path("cache"), "--device", self.device, *flags, "--resume", "auto"))
        return self.path(weights)

    def pairs(self, name: str, preset: str, num: int, seed: int) -> str:
        s = self.scale
        relative = f"runs/pairs-{name}.safetensors"
        workers = ("--workers", 8) if self.device == "cuda" and not s.smoke else ()
        self.add(f"pairs {name}", f"{num} latents the MMDiT makes from rendered clips (SDEdit), seed {seed}",
                 (relative,),
                 ("generate-latents", "--preset", preset, "--out", self.path(relative), "--num", s.pick(num, 1),
                  "--seed", seed, "--frames", s.pick(33, 9), *s.pick((), ("--first-step", 19, "--last-step", 19, *SMOKE_THREADS)),
                  "--device", self.device, *workers))
        return self.path(relative)

    # ------------------------------------------------------------------ the steps

    def _build(self) -> None:
        s = self.scale

        def gpu_bucket(batch: int) -> tuple:
            return () if s.smoke else ("--buckets", "demo" if batch == 8 else f"demo-batch{batch}")

        # 1. Data: the CPU runs' 1200 + 2000 clips, then fresh clips for every GPU run (HISTORY: runs 1-8, 25-32).
        self.render("a", 1200, 1)
        self.render("b", 2000, 2)
        train900 = self.join_csv("train900", [("a", s.pick(900, None))])
        train3200 = self.join_csv("train3200", [("a", None), ("b", None)])
        fresh = {run: self.render(f"gpu{seed}", num, seed) for run, num, seed in (
            (25, 3000, 101), (26, 4000, 102), (27, 4000, 103), (28, 4000, 104),
            (29, 5000, 105), (30, 5000, 106), (31, 5000, 107), (32, 5000, 108))}

        # 2. Text encoders, trained once and frozen since.
        self.text_encoders()
        demo = self.preset("demo-text")

        # 3. The shape-code VAE: the encoder of run C, then decoder-only runs D, E and H (HISTORY: A shape code
        #    in the latent; On one H100). Its encoder, latents and scale_factor stay fixed from C on.
        code = ("--crop-size", 96, "--crop-frames", 5, "--batch-size", 3, "--edge-weight", 30)
        vae_b = self.vae("b", "run B: block-mean start, shape code weight 1 (300 steps of an 800-step cosine)", demo,
                         "block_mean", 300, *code, "--shape-code-weight", 1, "--code-blur", 0.3, "--lr", 3e-4,
                         "--schedule", "constant", "--seed", 3)
        vae_c = self.vae("c", "run C: the encoder learns the shape code, weight 20", demo, vae_b, 1400, *code,
                         "--shape-code-weight", 20, "--code-blur", 0.3, "--lr", 3e-4, "--keep-scale", "--seed", 4)
        vae_d = self.vae("d", "decoder D: code blur 0.5", demo, vae_c, 500, *code, "--train", "decoder",
                         "--code-blur", 0.5, "--lr", 2e-4, "--keep-scale", "--eval-clips", 4, "--seed", 5)
        vae_e = self.vae("e", "decoder E: code blur 0.9", demo, vae_d, 450, *code, "--train", "decoder",
                         "--code-blur", 0.9, "--lr", 2e-4, "--keep-scale", "--eval-clips", 4, "--seed", 6)
        decoder = ("--train", "decoder", "--keep-scale", "--lr", 1e-4, "--crop-size", 96, "--crop-frames", 9,
                   "--image-fraction", 0.3, "--edge-weight", 30, "--l1-weight", 0.5, "--eval-clips", 2)
        vae_h = self.vae("h", "decoder H: blur 0.6 over 3 cells + noise 0.3 (3000 steps of a 20000-step cosine)", demo,
                         vae_e, 3000, *decoder, "--batch-size", 8, "--code-blur", 0.6, "--code-blur-cells", 3,
                         "--code-blur-noise", 0.3, "--schedule", "constant", "--checkpoint-every", 200,
                         "--data-workers", 3, "--seed", 33)

        # 4. The MMDiT from random weights on that VAE's latents: 4 single blocks (runs 1-4), grown to 8 (run 5),
        #    continued on 3200 clips (runs 6-8) and with more low-noise steps (run 10). One latent cache for all.
        p4 = self.preset("mmdit-4-blocks", vae="runs/vae-h/vae.safetensors", depth_single_blocks=4)
        run4 = self.mmdit("1-4", "runs 1-4: from random, 4 single blocks, train-demo.toml", p4, train900,
                          3000 + 7000 + 2000 + 6643, "demo", "random")
        grown = "runs/mmdit-grown.safetensors"
        p8 = self.preset("mmdit-8-blocks", vae="runs/vae-h/vae.safetensors")
        self.add("grow", "run 5's start: 4 -> 8 single blocks, the new ones the identity", (grown,),
                 ("grow-mmdit", "--weights", run4, "--preset", p8, "--out", self.path(grown)))
        previous = self.path(grown)
        for name, what, data, steps, config, flags in (
            ("5", "run 5: 8 single blocks", train900, 10000, "demo", ()),
            ("6", "run 6: 3200 clips", train3200, 6707, "demo", ("--lr", 3e-4, "--seed", 6)),
            ("7", "run 7", train3200, 8000, "demo", ("--lr", 3e-4, "--seed", 7)),
            ("8", "run 8", train3200, 2600, "demo", ("--lr", 1.5e-4, "--seed", 8)),
            ("10", "run 10: 11% of the steps below t' = 0.4", train3200, 2600, "demo-run10", ()),
        ):
            preset = self.preset(f"mmdit-{name}-start", mmdit=_relative(self.out, previous), vae="runs/vae-h/vae.safetensors")
            previous = self.mmdit(name, what, preset, data, steps, str(config), "preset", *flags)

        # 5. The GPU runs 25-32 (train-demo-gpu.toml: runs/train-run24.toml of sessions 15-17), each on fresh clips,
        #    with the decoder trained on the MMDiT's own latents between them: J, K, L, N, O.
        gpu = "demo-gpu"
        decoders = {"h": "runs/vae-h/vae.safetensors"}
        runs = {"10": previous}

        def gpu_run(run: int, start: str, steps: int, seed: int, batch: int) -> None:
            preset = self.preset(f"mmdit-{run}-start", mmdit=_relative(self.out, runs[start]), vae=decoders["h"])
            runs[str(run)] = self.mmdit(str(run), f"run {run}: batch {batch}, seed {seed}", preset, fresh[run], steps,
                                        gpu, "preset", "--seed", seed, *gpu_bucket(batch))

        def decoder_run(name: str, after: str, source: str, steps: int, seed: int, num: int, pairs_seed: int,
                        batch: int) -> None:
            preset = self.preset(f"pairs-{name}", mmdit=_relative(self.out, runs[source]), vae=decoders[after])
            pairs = self.pairs(name, preset, num, pairs_seed)
            decoders[name] = _relative(self.out, self.vae(
                name, f"decoder {name.upper()}: {after.upper()} + {steps} steps, half of them on run {source}'s latents",
                preset, self.path(decoders[after]), steps, *decoder, "--batch-size", batch, "--generated-latents",
                pairs, "--data-workers", 3, "--seed", seed))

        gpu_run(25, "10", 2282, 24, 8)
        gpu_run(26, "25", 3840, 24, 32)
        gpu_run(27, "26", 2477, 26, 64)
        decoder_run("j", "h", "27", 240, 41, 240, 11, 2)
        decoder_run("k", "j", "27", 1812, 42, 4000, 50, 8)
        gpu_run(28, "27", 1060, 28, 64)
        decoder_run("l", "k", "28", 3712, 43, 4000, 51, 8)
        gpu_run(29, "28", 3592, 29, 64)
        gpu_run(30, "29", 3281, 30, 64)
        decoder_run("n", "l", "30", 3562, 43, 4000, 53, 8)
        gpu_run(31, "30", 2401, 31, 64)
        decoder_run("o", "n", "31", 3250, 43, 4000, 53, 8)
        gpu_run(32, "31", 2520, 32, 64)

        # 6. What ships: the mean of runs 29-32 in bf16 with decoder O, as shards under 10 MB.
        mean = "runs/mmdit-29-32-mean.safetensors"
        self.add("average", "the mean of runs 29-32, each cast to bf16 (a model soup)", (mean,),
                 ("average-weights", "--dtype", "bf16", "--out", self.path(mean), *(runs[str(r)] for r in (29, 30, 31, 32))))
        self.add("shards", "models/demo/ as it ships: the MMDiT and VAE as shards behind a safetensors index",
                 ("models/demo/mmdit.safetensors.index.json", "models/demo/vae.safetensors.index.json"),
                 ("demo-shard-weights", "--mmdit", self.path(mean), "--vae", self.path(decoders["o"]),
                  "--out", self.path("models/demo")))
        final = self.preset("demo", mmdit="models/demo/mmdit.safetensors.index.json",
                            vae="models/demo/vae.safetensors.index.json")

        # 7. The held-out numbers at the preset's guidance 2 (HISTORY: Guidance 2): seeds 0-15, then 16 others.
        for name, first in (("held-out", 0), ("held-out-fresh-seeds", 16)):
            relative = f"eval/{name}.json"
            self.add(f"eval {name}", f"held-out accuracies, seeds {first}-{first + s.pick(16, 1) - 1}", (relative,),
                     ("eval-demo", "--preset", final, "--seeds", s.pick(16, 1), "--first-seed", first,
                      *s.pick((), ("--num-steps", 1, *SMOKE_THREADS)), "--summary", "--out", self.path(relative),
                      "--device", self.device))

    # ------------------------------------------------------------------ running

    def run(self, echo: Callable[[str], None] = print) -> None:
        from training.cli import main

        for number, step in enumerate(self.steps, start=1):
            # What is alive now (torch, the libraries, earlier steps' results) stays out of later garbage
            # collections: the pipeline collects after every video, and over this heap that takes a second.
            gc.collect()
            gc.freeze()
            head = f"[{number}/{len(self.steps)}] {step.name}"
            if all((self.out / o).exists() for o in step.outputs):
                echo(f"{head}: done before, skipped")
                continue
            echo(f"{head}: {step.what}\n    {step.command(self.out)}")
            started = time.perf_counter()
            if step.write is not None:
                step.write(self.out)
            elif main(list(step.argv)) != 0:
                raise UserError(f"recipe step {step.name!r} failed: {step.command(self.out)}")
            missing = [o for o in step.outputs if not (self.out / o).exists()]
            if missing:
                raise UserError(f"recipe step {step.name!r} did not write {', '.join(missing)}")
            echo(f"{head}: {time.perf_counter() - started:.1f} s")

    def plan(self) -> str:
        """The steps as `--dry-run` prints them."""
        lines = []
        for number, step in enumerate(self.steps, start=1):
            lines.append(f"[{number}/{len(self.steps)}] {step.name}: {step.what}\n    {step.command(self.out)}")
        return "\n".join(lines)


def _without(flags: tuple, names: tuple[str, ...]) -> tuple:
    """`flags` without the options in `names` and their values."""
    kept, skip = [], False
    for item in flags:
        if skip:
            skip = False
            continue
        if item in names:
            skip = True
            continue
        kept.append(item)
    return tuple(kept)


def _relative(out: Path, path: str) -> str:
    return str(Path(path).relative_to(out))

