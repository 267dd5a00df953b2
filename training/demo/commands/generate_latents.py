"""`python -m training generate-latents --preset P --out FILE --num N`: the MMDiT's own latents of
rendered clips, for `train-vae --train decoder --generated-latents FILE`."""

from __future__ import annotations

import argparse
import time

from training.demo.shapes_world import DEFAULT_NUM_FRAMES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="demo", help="preset whose MMDiT and VAE make the latents (default demo)")
    parser.add_argument("--out", required=True, help="file to write (.safetensors)")
    parser.add_argument("--num", type=int, default=240, help="pairs: rendered training clips (default 240)")
    parser.add_argument("--seed", type=int, default=0, help="same seed, same pairs (default 0)")
    parser.add_argument("--first-step", type=int, default=10,
                        help="earliest sampler step the clip's noised latent starts from (default 10 of 20)")
    parser.add_argument("--last-step", type=int, default=17, help="latest start step (default 17)")
    parser.add_argument("--frames", type=int, default=DEFAULT_NUM_FRAMES,
                        help=f"frames of each rendered clip (default {DEFAULT_NUM_FRAMES}, the demo clip length)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2; 1 per worker)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where the MMDiT and VAE run: auto = cuda when torch sees a GPU (default auto)")
    parser.add_argument("--workers", type=int, default=1,
                        help="processes making pairs, each with its own pipeline: the same file for any number "
                             "(default 1; on a GPU 8 keep it busy)")


def run(args: argparse.Namespace) -> int:
    import torch

    from opensora.pipeline import OpenSoraPipeline
    from opensora.presets import load_preset
    from training.demo.generated_latents import generate, generate_with_workers
    from training.demo.vae_trainer import resolve_device

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    device = str(resolve_device(args.device))
    if args.workers == 1:
        pipe = OpenSoraPipeline.from_preset(args.preset, device=device)
        path = generate(pipe, args.out, args.num, args.seed, args.first_step, args.last_step, args.frames)
    else:
        path = generate_with_workers(load_preset(args.preset), device, args.workers, args.out, args.num, args.seed,
                                     args.first_step, args.last_step, args.frames)
    print(f"wrote {path} ({args.num} pairs) in {time.perf_counter() - started:.1f}s")
    return 0
