"""The command-line flags of a generation, shared by `generate` and `queue add` / `queue run`.

Torch-free: flags are parsed (and bad ones refused) before the seconds of torch imports. The flags
split into what a video is (`add_job_arguments`, `add_lora_argument`, --refine-prompt: a queued
job keeps them) and how this machine runs it (`add_device_arguments`, `add_memory_arguments`, the
refinement server: `queue run` takes those). `add_arguments` is all of them, in generate's order.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from opensora.errors import UserError
from opensora.presets import DEFAULT_CKPT_DIR, DEFAULT_OUTPUT_DIR
from opensora.refine.arguments import add_refine_arguments

MAX_THREADS = 256


def flag(parser, name: str, **kwargs) -> None:
    """--some-name and --some_name, one destination."""
    spellings = dict.fromkeys([f"--{name}", f"--{name.replace('-', '_')}"])
    parser.add_argument(*spellings, dest=name.replace("-", "_"), **kwargs)


def frames_arg(value: str) -> int | str:
    """A frame count, or a named length of an Open-Sora 1.2 preset ("4s"; the preset checks it)."""
    return int(value) if value.strip().isdigit() else value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Every flag of `python -m opensora generate`."""
    add_job_arguments(parser)
    add_folder_arguments(parser)
    flag(parser, "preview", type=Path, default=None, help="also write the live preview there while sampling: the "
         "predicted video every few steps as a small animated WebP (needs the preset's presets/preview data)")
    add_device_arguments(parser)
    add_lora_argument(parser)
    add_memory_arguments(parser)
    add_refine_arguments(parser)


def add_job_arguments(parser: argparse.ArgumentParser) -> None:
    """What the videos are: the preset, the prompt or CSV, and every sampling setting."""
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


def add_folder_arguments(parser: argparse.ArgumentParser, ckpt: bool = True) -> None:
    if ckpt:
        flag(parser, "ckpt-dir", default=DEFAULT_CKPT_DIR, help="folder with the official checkpoints")
    flag(parser, "output-dir", default=DEFAULT_OUTPUT_DIR, help="where videos, sidecars and results.csv go")


def add_device_arguments(parser: argparse.ArgumentParser) -> None:
    flag(parser, "dtype", default=None, help="fp32, bf16 or fp16 (default: bf16 on GPU, fp32 on CPU)")
    flag(parser, "device", default=None, help="cpu, cuda or cuda:N (default: cuda when available)")
    flag(parser, "threads", type=int, default=None, help=f"torch CPU threads, 1-{MAX_THREADS} (default: torch's "
         "choice; a small model on a busy CPU is often faster with 1)")


def add_lora_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--lora", action="append", default=[], metavar="FILE[:SCALE]",
                        help="merge a LoRA from `python -m training finetune` (lora.safetensors) into the "
                        "model, scaled by SCALE (default 1.0, allowed -10 to 10); repeat to stack several")


def add_speed_arguments(parser: argparse.ArgumentParser) -> None:
    """Faster sampling: the preset's step caches, an explicit one, compiled blocks."""
    from opensora.sampling.cache_spec import describe_methods  # torch-free

    flag(parser, "speed", default=None, help="quality (default: every step computed), balanced or fast: the step "
         "cache the preset's [speed] table names, chosen by bench/speed.py (README, 'Faster sampling')")
    flag(parser, "cache", default=None, metavar="NAME[:PARAM=V,...]", help="an explicit step cache instead of "
         f"--speed (for experts; 'none': off). Methods, parameters (range): {describe_methods()}")
    flag(parser, "compile", action="store_true", help="torch.compile the MMDiT's repeated blocks: the first "
         "generation of a size compiles (reported), later ones reuse it")


def add_memory_arguments(parser: argparse.ArgumentParser, parallel: bool = True) -> None:
    """How the model runs on this machine: the pipeline cache's RuntimeOptions (parallel: --no-parallel too)."""
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
    if parallel:
        flag(parser, "no-parallel", action="store_true", help="one process even with several GPUs (default: run "
             "again under torchrun, one process per GPU, the video's tokens split over them)")


def requests_from_args(args: argparse.Namespace, preset_column: bool = False) -> list[tuple[str, object]]:
    """(where, GenerationRequest) per job; `where` names the CSV line in error messages.
    preset_column: a CSV row's `preset` picks its model (the queue; `generate` runs one preset)."""
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
    if preset_column:  # each job names its preset (generate's requests leave it to the one it runs)
        common["preset"] = args.preset
    if args.prompt is not None:
        return [("", GenerationRequest(prompt=args.prompt, cond_type=args.cond_type, reference=args.ref or [],
                                       seed=args.seed, **common))]
    from opensora.io.job_csv import requests_from_csv

    return requests_from_csv(args.csv, cond_type=args.cond_type, reference=args.ref or [], seed=args.seed,
                             preset_column=preset_column, **common)


def check_threads(threads: int | None) -> None:
    if threads is not None and not 1 <= threads <= MAX_THREADS:
        raise UserError(f"--threads {threads} is out of range: use 1-{MAX_THREADS}")


def runtime_options(args: argparse.Namespace, device: str, dtype: str):
    """The pipeline cache's RuntimeOptions from the device and memory flags."""
    from opensora.pipeline_cache import RuntimeOptions

    quant = None if args.text_encoder_quant in (None, "none") else args.text_encoder_quant
    return RuntimeOptions(device=device, dtype=dtype, offload=args.offload, offload_dir=args.offload_dir,
                          text_encoder_quant=quant, fp8_mmdit=args.fp8_mmdit, attention=args.attention)
