"""Measure one generation's memory in a fresh process: `python -m opensora.memory.probe ...` prints
one JSON line. Used by bench/memory.py and the memory tests (a child process per measurement,
since a process's peak RSS only ever grows).

    python -m opensora.memory.probe generate --config mid --profile disk [--out latent.safetensors]
    python -m opensora.memory.probe vae-decode --frames 129 [--temporal-tiling] [--out video.safetensors]
"""

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent


@dataclass(frozen=True)
class ProbeConfig:
    """A random-weight model and the video it makes: tiny (the tiny-random preset) or mid (its
    MMDiT at hidden 1024 with 8 blocks, the size where the weights dominate a CPU's memory)."""

    preset: str
    mmdit: dict
    num_frames: int
    height: int
    width: int
    num_steps: int


CONFIGS = {
    "tiny": ProbeConfig("tiny-random", {}, num_frames=9, height=32, width=64, num_steps=2),
    "mid": ProbeConfig(
        "tiny-random",
        {"hidden_size": 1024, "num_heads": 8, "depth": 4, "depth_single_blocks": 4, "axes_dim": (16, 56, 56)},
        num_frames=9, height=64, width=64, num_steps=1,
    ),
}


def probe_preset(config: ProbeConfig):
    from opensora.presets import load_preset

    preset = load_preset(config.preset)
    return replace(preset, mmdit=replace(preset.mmdit, **config.mmdit)) if config.mmdit else preset


def _mib(n: int) -> float:
    return round(n / 2**20, 1)


def generate(args) -> dict:
    import torch

    from opensora.memory.rss import peak_rss_bytes, reset_peak_rss, rss_bytes
    from opensora.offload import apply_offload, release_memory
    from opensora.pipeline import OpenSoraPipeline
    from opensora.sampling.denoise import GuidanceOptions

    torch.set_num_threads(args.threads)
    config = CONFIGS[args.config]
    preset = probe_preset(config)
    start = rss_bytes()
    pipe = OpenSoraPipeline.from_preset(preset)
    offload = apply_offload(pipe, args.profile, "cpu", fp8_mmdit=args.fp8)
    load_peak = peak_rss_bytes()
    latent_t = preset.vae.latent_frames(config.num_frames)
    unit = preset.vae.spatial_compression
    shape = (1, preset.mmdit.latent_channels, latent_t, config.height // unit, config.width // unit)
    runs, seconds = [], []
    for _ in range(args.repeat):
        release_memory(torch.device("cpu"))
        reset_peak_rss()
        noise = torch.randn(shape, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            with offload.encode():
                txt, y_vec = pipe.text_encoder.encode(["a red circle moving right", "", ""])
            began = time.perf_counter()
            with offload.sample():
                latent = pipe.sample(noise, txt, y_vec, "t2v", [[]], GuidanceOptions(), config.num_steps)
            seconds.append((time.perf_counter() - began) / config.num_steps)
            with offload.decode():
                pipe.vae.decode(latent)
        runs.append({"peak_run_mib": _mib(peak_rss_bytes()), "rss_after_mib": _mib(rss_bytes())})
    if args.out:
        from safetensors.torch import save_file

        save_file({"latent": latent.contiguous()}, args.out)
    offload.close()
    return {
        "probe": "generate", "config": args.config, "profile": args.profile, "fp8": args.fp8,
        "num_frames": config.num_frames, "height": config.height, "width": config.width,
        "rss_start_mib": _mib(start), "peak_load_mib": _mib(load_peak),
        "peak_run_mib": max(r["peak_run_mib"] for r in runs),
        "peak_mib": max(_mib(load_peak), *(r["peak_run_mib"] for r in runs)),
        "runs": runs, "seconds_per_step": round(min(seconds), 4),
    }


def vae_decode(args) -> dict:
    import torch

    from opensora.memory.rss import peak_rss_bytes, reset_peak_rss, rss_bytes
    from opensora.pipeline import OpenSoraPipeline

    torch.set_num_threads(args.threads)
    vae = OpenSoraPipeline.from_preset(args.preset).vae
    vae.set_temporal_tiling(args.temporal_tiling)
    config = vae.config
    size = args.size // config.spatial_compression
    latent = torch.randn(1, config.latent_channels, config.latent_frames(args.frames), size, size,
                         generator=torch.Generator().manual_seed(0))
    before = rss_bytes()
    reset_peak_rss()
    began = time.perf_counter()
    with torch.no_grad():
        video = vae.decode(latent)
    seconds = time.perf_counter() - began
    peak = peak_rss_bytes()
    if args.out:
        from safetensors.torch import save_file

        save_file({"video": video.contiguous()}, args.out)
    return {
        "probe": "vae-decode", "preset": args.preset, "frames": args.frames, "size": args.size,
        "temporal_tiling": args.temporal_tiling, "frames_out": video.shape[2],
        "rss_before_mib": _mib(before), "peak_mib": _mib(peak), "added_mib": _mib(peak - before),
        "seconds": round(seconds, 3),
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m opensora.memory.probe", description=__doc__)
    sub = parser.add_subparsers(dest="probe", required=True)
    gen = sub.add_parser("generate")
    gen.add_argument("--config", choices=sorted(CONFIGS), default="tiny")
    gen.add_argument("--profile", default="none")
    gen.add_argument("--fp8", action="store_true", help="MMDiT weights stored in fp8")
    gen.add_argument("--repeat", type=int, default=1, help="generations in this process (RSS growth)")
    vae = sub.add_parser("vae-decode")
    vae.add_argument("--preset", default="demo")
    vae.add_argument("--frames", type=int, default=33)
    vae.add_argument("--size", type=int, default=128, help="square pixel size")
    vae.add_argument("--temporal-tiling", action="store_true")
    for p in (gen, vae):
        p.add_argument("--threads", type=int, default=2)
        p.add_argument("--out", default=None, help="save the latent / video here (safetensors)")
    return parser


def run_probe(*argv: str, timeout: float = 600) -> dict:
    """Run a probe in a child process and return its JSON (raises with the child's stderr on failure)."""
    proc = subprocess.run(
        [sys.executable, "-m", "opensora.memory.probe", *argv], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )
    if proc.returncode != 0:
        raise RuntimeError(f"probe {' '.join(argv)} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    result = generate(args) if args.probe == "generate" else vae_decode(args)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
