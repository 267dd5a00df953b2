"""`python -m opensora generate`: prompts (or a CSV of them) -> OUTPUT_DIR/NNNN.mp4 + NNNN.json + results.csv.

Flags follow the official inference script; both `--num-frames` and `--num_frames` spellings work.
Every job is resolved and checked before the model loads (the memory planner included); then each
goes through `opensora.runner`.

With more than one GPU it runs itself again under torchrun, one process per GPU (`--no-parallel`:
not): rank 0 reads the jobs and writes the videos, the other ranks follow (opensora.parallel.jobs).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from opensora.refine.arguments import add_refine_arguments, settings_from_args
from opensora.errors import UserError

from opensora.presets import DEFAULT_CKPT_DIR


def flag(parser, name: str, **kwargs) -> None:
    """--some-name and --some_name, one destination."""
    spellings = dict.fromkeys([f"--{name}", f"--{name.replace('-', '_')}"])
    parser.add_argument(*spellings, dest=name.replace("-", "_"), **kwargs)


def frames_arg(value: str) -> int | str:
    """A frame count, or a named length of an Open-Sora 1.2 preset ("4s"; the preset checks it)."""
    return int(value) if value.strip().isdigit() else value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    flag(parser, "preset", default=None, help="preset name or TOML file (default: official 256px if "
         "its files are in --ckpt-dir, else the bundled demo model)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--prompt", help="what the video shows")
    source.add_argument("--csv", type=Path, help="CSV with a `text` column; optional `ref`, `cond_type`, `seed`")
    flag(parser, "negative-prompt", default="", help="text for the unconditional branches (official: empty)")
    flag(parser, "ref", default=None, help="reference image/video for i2v/v2v ('first;last' for i2v_loop)")
    flag(parser, "cond-type", default="t2v", help="t2v, i2v_head, i2v_tail, i2v_loop, v2v_head, v2v_tail, "
         "v2v_head_easy, v2v_tail_easy (Open-Sora 1.2: all but the _easy types)")
    flag(parser, "num-frames", type=frames_arg, default=None, help="4k+1 frames, up to the preset's limit (129 for "
         "Open-Sora 2.0); Open-Sora 1.2: 1 or 17..408, or a length: 2s, 4s, 8s, 16s")
    flag(parser, "aspect-ratio", default=None, help="aspect ratio name of the preset's buckets, e.g. 16:9; "
         "'auto' (the default with a reference): the bucket closest to the reference's shape")
    flag(parser, "resolution", default=None, help="bucket table of the preset, e.g. 256px")
    flag(parser, "height", type=int, default=None, help="with --width: replace the bucket (multiples of the "
         "preset's token size: 16 for Open-Sora 2.0, 32 for the demo model; any size from 16 for Open-Sora 1.2)")
    flag(parser, "width", type=int, default=None, help="with --height: replace the bucket")
    flag(parser, "num-steps", type=int, default=None, help="denoising steps (preset default)")
    add_speed_arguments(parser)
    flag(parser, "guidance", type=float, default=None, help="text guidance (official 7.5)")
    flag(parser, "guidance-img", type=float, default=None, help="image guidance (official 3.0)")
    flag(parser, "motion-score", default=None, help="1-15 or 'dynamic' (asks the refinement server); Open-Sora "
         "1.2: the official --flow, a number 0-100 or 'none' (default)")
    flag(parser, "mask-strategy", default=None, help="Open-Sora 1.2: a raw official mask strategy, e.g. "
         "'0;0,1,0,-1,1' (wins over --cond-type's; references from --ref, ';'-separated)")
    flag(parser, "aesthetic-score", default=None, help="Open-Sora 1.2: 0-10 or 'none' (official 6.5)")
    flag(parser, "camera-motion", default=None, help="Open-Sora 1.2: pan right, pan left, tilt up, tilt down, "
         "zoom in, zoom out, static, or none (default)")
    flag(parser, "use-t2i2v", action=argparse.BooleanOptionalAction, default=None,
         help="text -> image -> video (t2v only): FLUX.1-dev draws the first frame, the video starts on it; "
         "needs a preset with FLUX files (default: the preset's, on for the t2i2v presets)")
    flag(parser, "image-resolution", default=None, help="with --use-t2i2v: bucket table of the FLUX image "
         "(default: the preset's, 768px for the official presets)")
    flag(parser, "seed", type=int, default=None, help="seed for everything (random if omitted, reported); "
         "sample k of --num-sample uses seed + k")
    flag(parser, "noise-seed", type=int, default=None, help="separate seed for the initial noise")
    flag(parser, "num-sample", type=int, default=1, help="videos per prompt (seed + k each)")
    flag(parser, "ckpt-dir", default=DEFAULT_CKPT_DIR, help="folder with the official checkpoints")
    flag(parser, "output-dir", default="outputs", help="where videos, sidecars and results.csv go")
    flag(parser, "preview", type=Path, default=None, help="also write the live preview there while sampling: the "
         "predicted video every few steps as a small animated WebP (needs the preset's presets/preview data)")
    flag(parser, "dtype", default=None, help="fp32, bf16 or fp16 (default: bf16 on GPU, fp32 on CPU)")
    flag(parser, "device", default=None, help="cpu, cuda or cuda:N (default: cuda when available)")
    flag(parser, "threads", type=int, default=None, help="torch CPU threads, 1-256 (default: torch's "
         "choice; a small model on a busy CPU is often faster with 1)")
    parser.add_argument("--lora", action="append", default=[], metavar="FILE[:SCALE]",
                        help="merge a LoRA from `python -m training finetune` (lora.safetensors) into the "
                        "model, scaled by SCALE (default 1.0, allowed -10 to 10); repeat to stack several")
    add_memory_arguments(parser)
    add_refine_arguments(parser)


def add_speed_arguments(parser: argparse.ArgumentParser) -> None:
    """Faster sampling: the preset's step caches, an explicit one, compiled blocks."""
    from opensora.sampling.cache_spec import describe_methods  # torch-free

    flag(parser, "speed", default=None, help="quality (default: every step computed), balanced or fast: the step "
         "cache the preset's [speed] table names, chosen by bench/speed.py (README, 'Faster sampling')")
    flag(parser, "cache", default=None, metavar="NAME[:PARAM=V,...]", help="an explicit step cache instead of "
         f"--speed (for experts; 'none': off). Methods, parameters (range): {describe_methods()}")
    flag(parser, "compile", action="store_true", help="torch.compile the MMDiT's repeated blocks: the first "
         "generation of a size compiles (reported), later ones reuse it")


def add_memory_arguments(parser: argparse.ArgumentParser) -> None:
    """How the model runs on this machine: the pipeline cache's RuntimeOptions."""
    from opensora.memory.profiles import load_memory_profiles  # torch-free: a TOML file

    profiles = list(load_memory_profiles())
    flag(parser, "offload", default="auto", choices=["auto", *profiles], help="memory profile "
         "(presets/profiles/memory.toml): auto (default) = the fastest one the memory planner says fits this "
         "GPU and RAM (python -m opensora plan shows them); none = everything on the GPU")
    flag(parser, "offload-dir", default=None, help="folder for the disk profile's block files (default: a "
         "temporary folder, removed at the end)")
    flag(parser, "text-encoder-quant", default=None, help="T5 in int8 or nf4 (bitsandbytes; default: the dtype)")
    flag(parser, "fp8-mmdit", action="store_true", help="store the MMDiT's weights in fp8, computed in the dtype")
    flag(parser, "attention", default="auto", help="attention kernel: auto (default, the fastest installed), sdpa, "
         "flash, flash3, sage, xformers")
    flag(parser, "no-parallel", action="store_true", help="one process even with several GPUs (default: run "
         "again under torchrun, one process per GPU, the video's tokens split over them)")


def requests_from_args(args: argparse.Namespace) -> list[tuple[str, object]]:
    """(where, GenerationRequest) per job; `where` names the CSV line in error messages."""
    from opensora.generation_settings import GenerationRequest, LoraChoice
    from opensora.lora import parse_lora_spec

    loras = [LoraChoice(str(path), scale) for path, scale in map(parse_lora_spec, args.lora)]
    common = dict(
        negative_prompt=args.negative_prompt, num_frames=args.num_frames, resolution=args.resolution,
        aspect_ratio=args.aspect_ratio, height=args.height, width=args.width, num_steps=args.num_steps,
        guidance=args.guidance, guidance_img=args.guidance_img, motion_score=args.motion_score,
        mask_strategy=args.mask_strategy, aesthetic_score=args.aesthetic_score, camera_motion=args.camera_motion,
        noise_seed=args.noise_seed, num_samples=args.num_sample, refine=args.refine_prompt, loras=loras,
        use_t2i2v=args.use_t2i2v, image_resolution=args.image_resolution, speed=args.speed, cache=args.cache,
        compile=args.compile,
    )
    if args.prompt is not None:
        return [("", GenerationRequest(prompt=args.prompt, cond_type=args.cond_type, reference=args.ref or [],
                                       seed=args.seed, **common))]
    from opensora.io.job_csv import requests_from_csv

    return requests_from_csv(args.csv, cond_type=args.cond_type, reference=args.ref or [], seed=args.seed, **common)


class BarProgress:
    """The runner's progress on stderr: messages as lines, steps as a tqdm bar."""

    def __init__(self, label: str, preview=None):
        self.label, self.bar = label, None
        self.preview = preview  # the runner's preview hook (--preview), or None for none

    def message(self, text: str) -> None:
        if self.bar is None:
            print(f"{text}", file=sys.stderr)
        else:  # e.g. the FLUX first frame being drawn before the video's steps
            self.bar.set_postfix_str(text)

    def begin(self, num_samples: int) -> None:
        from tqdm import tqdm

        self.bar = tqdm(desc=self.label, unit="step", file=sys.stderr)

    def __call__(self, step: int, total: int, _latent=None) -> None:
        if step == 0:
            self.bar.reset(total=total)
            self.bar.set_postfix_str("")  # the video's steps: earlier messages are done
        self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()  # ends the bar's line: a following error starts on its own
            self.bar = None


def runtime_options(args: argparse.Namespace, device: str, dtype: str):
    from opensora.pipeline_cache import RuntimeOptions

    quant = None if args.text_encoder_quant in (None, "none") else args.text_encoder_quant
    return RuntimeOptions(device=device, dtype=dtype, offload=args.offload, offload_dir=args.offload_dir,
                          text_encoder_quant=quant, fp8_mmdit=args.fp8_mmdit, attention=args.attention)


def run(args: argparse.Namespace) -> int:
    from opensora.devices import check_device
    from opensora.parallel.process_group import launched_by_torchrun, should_relaunch, torchrun_argv
    from opensora.pipeline_cache import PipelineCache

    if args.threads is not None and not 1 <= args.threads <= 256:
        raise UserError(f"--threads {args.threads} is out of range: use 1-256")
    device, dtype = check_device(args.device, args.dtype)
    options = runtime_options(args, device, dtype)
    if launched_by_torchrun():
        return run_as_rank(args, options)
    preset, jobs = checked_jobs(args, options)  # bad input fails here, before any process starts
    nproc = should_relaunch(args.no_parallel)
    if nproc:
        print(f"{nproc} GPUs: running under torchrun, one process per GPU (--no-parallel: one process)",
              file=sys.stderr)
        return subprocess.call(torchrun_argv(nproc, ["-m", "opensora", *sys.argv[1:]]))
    return run_jobs(args, preset, jobs, PipelineCache(args.ckpt_dir, options=options))


def run_as_rank(args: argparse.Namespace, options) -> int:
    """Under torchrun: rank 0 runs the jobs, the others follow; every rank leaves the group at the end."""
    from dataclasses import replace

    from opensora.parallel.jobs import follow_jobs, stop_followers
    from opensora.parallel.process_group import destroy, init_from_env
    from opensora.pipeline_cache import PipelineCache

    state = init_from_env()
    pipelines = PipelineCache(args.ckpt_dir, options=replace(options, device=str(state.device)))  # the rank's GPU
    try:
        if not state.is_main:
            follow_jobs(pipelines)
            return 0
        try:
            preset, jobs = checked_jobs(args, pipelines.options)
            return run_jobs(args, preset, jobs, pipelines)
        finally:
            stop_followers()
    finally:
        pipelines.unload()
        destroy()


def checked_jobs(args: argparse.Namespace, options):
    """(preset, [GenerationSettings]): every job resolved and checked, the memory planner included."""
    from opensora.checkpoints import default_preset_name
    from opensora.generation_settings import resolve_settings
    from opensora.io.outputs import OutputWriter
    from opensora.presets import load_preset
    from opensora.runner import check_job_fits

    preset = load_preset(args.preset or default_preset_name(args.ckpt_dir))
    jobs = []
    for where, request in requests_from_args(args):
        try:
            settings = resolve_settings(request, preset)
            check_job_fits(settings, preset, options, args.ckpt_dir)
        except UserError as err:
            raise UserError(f"{where}{err}") from None
        jobs.append(settings)
    OutputWriter(args.output_dir).check_writable()
    return preset, jobs


def run_jobs(args: argparse.Namespace, preset, jobs: list, pipelines) -> int:
    from opensora.preview.files import PreviewFile
    from opensora.runner import run_job

    refine_settings = settings_from_args(args)
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    print(f"preset {preset.name} ({preset.description})", file=sys.stderr)
    try:
        for settings in jobs:
            progress = BarProgress(settings.prompt[:40], None if args.preview is None else PreviewFile(args.preview))
            try:
                result = run_job(preset, settings, pipelines, args.output_dir, progress,
                                 refine_settings=refine_settings)
            finally:
                progress.close()
            for notice in result.notices:
                print(f"notice: {notice}", file=sys.stderr)
            for path in result.paths:
                print(path)
    finally:
        pipelines.unload()  # e.g. the disk profile's block files
    return 0
