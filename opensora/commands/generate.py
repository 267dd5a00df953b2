"""`python -m opensora generate`: prompts (or a CSV of them) -> OUTPUT_DIR/NNNN.mp4 + NNNN.json + results.csv.

Flags follow the official inference script; both `--num-frames` and `--num_frames` spellings work.
"""

import argparse
import csv
import sys
from dataclasses import dataclass
from pathlib import Path

from opensora.commands.refine import add_refine_arguments, settings_from_args
from opensora.errors import UserError

DEFAULT_CKPT_DIR = "ckpts"


def _flag(parser, name: str, **kwargs) -> None:
    """--some-name and --some_name, one destination."""
    parser.add_argument(f"--{name}", f"--{name.replace('-', '_')}", dest=name.replace("-", "_"), **kwargs)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _flag(parser, "preset", default=None, help="preset name or TOML file (default: official 256px if "
          "its files are in --ckpt-dir, else the bundled demo model, else tiny-random)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--prompt", help="what the video shows")
    source.add_argument("--csv", type=Path, help="CSV with a `text` column; optional `ref`, `cond_type`, `seed`")
    _flag(parser, "negative-prompt", default="", help="text for the unconditional branches (official: empty)")
    _flag(parser, "ref", default=None, help="reference image/video for i2v/v2v ('first;last' for i2v_loop)")
    _flag(parser, "cond-type", default="t2v", help="t2v, i2v_head, i2v_tail, i2v_loop, v2v_head, v2v_tail, "
          "v2v_head_easy, v2v_tail_easy")
    _flag(parser, "num-frames", type=int, default=None, help="4k+1 frames, at most 129")
    _flag(parser, "aspect-ratio", default=None, help="aspect ratio name of the preset's buckets, e.g. 16:9")
    _flag(parser, "resolution", default=None, help="bucket table of the preset, e.g. 256px")
    _flag(parser, "height", type=int, default=None, help="override the bucket height (multiple of 16)")
    _flag(parser, "width", type=int, default=None, help="override the bucket width (multiple of 16)")
    _flag(parser, "num-steps", type=int, default=None, help="denoising steps (preset default)")
    _flag(parser, "guidance", type=float, default=None, help="text guidance (official 7.5)")
    _flag(parser, "guidance-img", type=float, default=None, help="image guidance (official 3.0)")
    _flag(parser, "motion-score", default=None, help="1-15 or 'dynamic' (asks the refinement server)")
    _flag(parser, "seed", type=int, default=None, help="seed for everything (random if omitted, reported)")
    _flag(parser, "noise-seed", type=int, default=None, help="separate seed for the initial noise")
    _flag(parser, "num-sample", type=int, default=1, help="videos per prompt (noise seed + k)")
    _flag(parser, "ckpt-dir", default=str(DEFAULT_CKPT_DIR), help="folder with the official checkpoints")
    _flag(parser, "output-dir", default="outputs", help="where videos, sidecars and results.csv go")
    _flag(parser, "dtype", default=None, help="fp32, bf16 or fp16 (default: bf16 on GPU, fp32 on CPU)")
    _flag(parser, "device", default=None, help="cpu or cuda (default: cuda when available)")
    _flag(parser, "threads", type=int, default=None, help="torch CPU threads, 1-256 (default: torch's "
          "choice; a small model on a busy CPU is often faster with 1)")
    parser.add_argument("--lora", action="append", default=[], metavar="FILE[:SCALE]",
                        help="merge a LoRA from `python -m training finetune` (lora.safetensors) into the "
                        "model, scaled by SCALE (default 1.0, allowed -10 to 10); repeat to stack several")
    add_refine_arguments(parser)


@dataclass
class Job:
    text: str
    ref: str | None
    cond_type: str
    seed: int | None


def read_jobs(args: argparse.Namespace) -> list[Job]:
    if args.prompt is not None:
        return [Job(args.prompt, args.ref, args.cond_type, args.seed)]
    if not args.csv.is_file():
        raise UserError(f"CSV file {args.csv} does not exist")
    with open(args.csv, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows or "text" not in rows[0]:
        found = ", ".join(rows[0]) if rows else "none (empty file)"
        raise UserError(f"{args.csv} needs a `text` column (optional: ref, cond_type, seed); columns found: {found}")
    jobs = []
    for line, row in enumerate(rows, start=2):
        seed = row.get("seed") or None
        try:
            seed = args.seed if seed is None else int(seed)
        except ValueError:
            raise UserError(f"{args.csv} line {line}: seed {row['seed']!r} is not an integer") from None
        ref = row.get("ref") or args.ref
        if ref and not Path(ref.split(";")[0]).is_absolute():
            ref = ";".join(str(args.csv.parent / p) if not Path(p).exists() else p for p in ref.split(";"))
        jobs.append(Job(row["text"], ref, row.get("cond_type") or args.cond_type, seed))
    return jobs


def check_jobs(jobs: list[Job], args: argparse.Namespace, preset) -> None:
    """Fail on bad settings before spending seconds or minutes loading the model."""
    from opensora.generation import check_settings

    for job in jobs:
        job.cond_type = check_settings(
            preset, job.text, job.cond_type, job.ref.split(";") if job.ref else [], args.num_frames,
            args.resolution, args.aspect_ratio, sized=args.height is not None or args.width is not None,
            motion_score=args.motion_score,
        )


def run(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from opensora.checkpoints import default_preset_name
    from opensora.generation import write_videos
    from opensora.io.outputs import OutputWriter
    from opensora.lora import parse_lora_spec, read_lora_file
    from opensora.pipeline import OpenSoraPipeline
    from opensora.presets import load_preset
    from opensora.refine import prepare_prompt

    if args.threads is not None:
        if not 1 <= args.threads <= 256:
            raise UserError(f"--threads {args.threads} is out of range: use 1-256")
        torch.set_num_threads(args.threads)
    preset = load_preset(args.preset or default_preset_name(args.ckpt_dir))
    jobs = read_jobs(args)
    check_jobs(jobs, args, preset)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = args.dtype or ("bf16" if device.startswith("cuda") else "fp32")
    refine_settings = settings_from_args(args)
    loras = [parse_lora_spec(spec) for spec in args.lora]  # bad paths/scales fail before loading
    for path, _ in loras:
        read_lora_file(path)
    motion = args.motion_score if args.motion_score is not None else preset.sampler.motion_score

    print(f"loading preset {preset.name} ({preset.description})", file=sys.stderr)
    pipe = OpenSoraPipeline.from_preset(preset, args.ckpt_dir, device, dtype)
    for path, scale in loras:
        pipe.load_lora(path, scale)
        print(f"merged LoRA {path} (scale {scale:g})", file=sys.stderr)
    writer = OutputWriter(args.output_dir)
    for job in jobs:
        prepared = prepare_prompt(
            job.text, refine=args.refine_prompt, motion_score=motion,
            mode="t2v" if job.cond_type == "t2v" else "t2i", settings=refine_settings,
            shapes_world=preset.name == "demo", fps=preset.sampler.fps,
        )
        for notice in prepared.notices:
            print(f"notice: {notice}", file=sys.stderr)
        bar = tqdm(desc=job.text[:40], unit="step", file=sys.stderr)

        def progress(step, total, _latent):
            bar.total = total
            bar.update(1)

        result = pipe(
            prepared.text, negative_prompt=args.negative_prompt, cond_type=job.cond_type, reference=job.ref,
            num_frames=args.num_frames, resolution=args.resolution, aspect_ratio=args.aspect_ratio,
            height=args.height, width=args.width, num_steps=args.num_steps, guidance=args.guidance,
            guidance_img=args.guidance_img, motion_score=prepared.motion_score, seed=job.seed,
            noise_seed=args.noise_seed, num_samples=args.num_sample, callback=progress,
        )
        bar.close()
        for path in write_videos(writer, result, prepared, job.text):
            print(path)
    return 0
