"""Measure one generation's memory in a fresh process: `python -m opensora.memory.probe ...` prints
one JSON line. Used by bench/memory.py and the memory tests (a child process per measurement,
since a process's peak RSS only ever grows).

    python -m opensora.memory.probe generate --config mid --profile disk [--out latent.safetensors]
    python -m opensora.memory.probe generate --config full-11b --device cuda --profile group
    python -m opensora.memory.probe vae-decode --frames 129 [--temporal-tiling] [--out video.safetensors]

On a CPU it measures peak RSS; on a GPU torch.cuda.max_memory_allocated / _reserved too.
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
    """A random-weight model and the video it makes: tiny (the tiny-random preset), mid (its
    MMDiT at hidden 1024 with 8 blocks, the size where the weights dominate a CPU's memory) or
    full-11b (the official 11B model, T5-XXL and CLIP-L at 256px x 129 frames: GPU only)."""

    preset: str
    mmdit: dict
    num_frames: int
    height: int
    width: int
    num_steps: int
    gpu_only: bool = False


CONFIGS = {
    "tiny": ProbeConfig("tiny-random", {}, num_frames=9, height=32, width=64, num_steps=2),
    "mid": ProbeConfig(
        "tiny-random",
        {"hidden_size": 1024, "num_heads": 8, "depth": 4, "depth_single_blocks": 4, "axes_dim": (16, 56, 56)},
        num_frames=9, height=64, width=64, num_steps=1,
    ),
    "full-11b": ProbeConfig("opensora-v2-256px", {}, num_frames=129, height=192, width=336, num_steps=3, gpu_only=True),
}
# The official figure for the full model: 50 steps in 60 s and 52.5 GB on one H100 (256px, 129 frames).
OFFICIAL_256PX_H100 = {"seconds_per_step": 60 / 50, "peak_gb": 52.5}


def probe_preset(config: ProbeConfig):
    from opensora.presets import load_preset

    preset = load_preset(config.preset)
    return replace(preset, mmdit=replace(preset.mmdit, **config.mmdit)) if config.mmdit else preset


def _mib(n: int) -> float:
    return round(n / 2**20, 1)


def random_pipeline(preset, dtype):
    """The preset's architecture with random weights, made on the meta device and given storage in
    host RAM in `dtype` (no checkpoint read, no fp32 copy of 16B parameters); apply_offload then
    moves what each profile puts on the GPU. Text encoders: the official T5-XXL / CLIP-L shapes."""
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    from opensora.memory.profiles import official_text_encoder_configs
    from opensora.models.hunyuan_vae import HunyuanVAE
    from opensora.models.mmdit import build_mmdit
    from opensora.models.text_encoders import TextConditioner, byte_tokenizer
    from opensora.pipeline import OpenSoraPipeline

    encoders = official_text_encoder_configs()
    with torch.device("meta"):
        transformer, t5 = build_mmdit(preset.mmdit), T5EncoderModel(T5Config(**encoders["t5"]))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in (transformer, t5):  # no buffers in either: every tensor is a parameter
            module.to(dtype).to_empty(device="cpu")
            for parameter in module.parameters():
                parameter.normal_(0.0, 0.02, generator=generator)
    torch.manual_seed(0)
    clip = CLIPTextModel(CLIPTextConfig(**encoders["clip"])).to(dtype)  # small, and it has a buffer
    vae = HunyuanVAE(preset.vae).to(dtype)
    text = TextConditioner(t5, byte_tokenizer("t5"), clip, byte_tokenizer("clip"), preset.text)
    return OpenSoraPipeline(preset, transformer.eval(), vae.eval(), text, device="cpu", dtype=dtype)


def generate(args) -> dict:
    import torch

    from opensora.memory.rss import peak_rss_bytes, reset_peak_rss, rss_bytes
    from opensora.offload import apply_offload, release_memory
    from opensora.pipeline import OpenSoraPipeline
    from opensora.sampling.denoise import GuidanceOptions

    torch.set_num_threads(args.threads)
    config = CONFIGS[args.config]
    device = torch.device(args.device)
    if config.gpu_only and device.type != "cuda":
        raise SystemExit(f"config {args.config} needs --device cuda")
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    preset = probe_preset(config)
    start = rss_bytes()
    pipe = random_pipeline(preset, dtype) if config.gpu_only else OpenSoraPipeline.from_preset(preset, dtype=dtype)
    pipe.device = device  # where sample() puts the condition and position ids
    offload = apply_offload(pipe, args.profile, device, fp8_mmdit=args.fp8)
    load_peak = peak_rss_bytes()
    latent_t = preset.vae.latent_frames(config.num_frames)
    unit = preset.vae.spatial_compression
    shape = (1, preset.mmdit.latent_channels, latent_t, config.height // unit, config.width // unit)
    on_gpu = device.type == "cuda"
    runs, seconds = [], []
    for _ in range(args.repeat):
        release_memory(device)
        reset_peak_rss()
        if on_gpu:
            torch.cuda.reset_peak_memory_stats(device)
        noise = torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=dtype).to(device)
        stamps = []

        def step_done(*_):
            if on_gpu:
                torch.cuda.synchronize(device)
            stamps.append(time.perf_counter())

        with torch.no_grad():
            with offload.encode():
                txt, y_vec = pipe.text_encoder.encode(["a red circle moving right", "", ""])
            txt, y_vec = txt.to(device, dtype), y_vec.to(device, dtype)
            stamps.append(time.perf_counter())
            with offload.sample():
                latent = pipe.sample(noise, txt, y_vec, "t2v", [[]], GuidanceOptions(), config.num_steps, step_done)
            with offload.decode():
                pipe.vae.decode(latent.to(dtype))
        steps = [b - a for a, b in zip(stamps, stamps[1:])]
        seconds.append(sorted(steps[1:])[len(steps[1:]) // 2] if len(steps) > 1 else steps[0])  # skip the warm-up step
        peak = peak_rss_bytes()
        release_memory(device)  # as the job runner does between generations
        run = {"peak_run_mib": _mib(peak), "rss_after_mib": _mib(rss_bytes())}
        if on_gpu:
            run["gpu_allocated_mib"] = _mib(torch.cuda.max_memory_allocated(device))
            run["gpu_reserved_mib"] = _mib(torch.cuda.max_memory_reserved(device))
        runs.append(run)
    if args.out:
        from safetensors.torch import save_file

        save_file({"latent": latent.float().cpu().contiguous()}, args.out)
    offload.close()
    result = {
        "probe": "generate", "config": args.config, "profile": args.profile, "fp8": args.fp8,
        "device": str(device), "dtype": args.dtype,
        "num_frames": config.num_frames, "height": config.height, "width": config.width,
        "rss_start_mib": _mib(start), "peak_load_mib": _mib(load_peak),
        "peak_run_mib": max(r["peak_run_mib"] for r in runs),
        "peak_mib": max(_mib(load_peak), *(r["peak_run_mib"] for r in runs)),
        "runs": runs, "seconds_per_step": round(min(seconds), 4),
    }
    if on_gpu:
        result["gpu_allocated_mib"] = max(r["gpu_allocated_mib"] for r in runs)
        result["gpu_reserved_mib"] = max(r["gpu_reserved_mib"] for r in runs)
    return result


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
    gen.add_argument("--device", default="cpu")
    gen.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default="fp32")
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
