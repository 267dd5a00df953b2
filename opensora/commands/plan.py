"""`python -m opensora plan`: predicted GPU memory and RAM of every memory profile, before loading.

    python -m opensora plan --preset opensora-v2-256px --num-frames 129 --vram-gb 24 --ram-gb 64
"""

import argparse
from pathlib import Path

from opensora.presets import DEFAULT_CKPT_DIR


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="opensora-v2-256px", help="preset name or TOML path")
    parser.add_argument("--num-frames", type=int, default=None, help="4k+1 frames (default: the preset's)")
    parser.add_argument("--resolution", default=None, help="bucket table of the preset (default: the preset's)")
    parser.add_argument("--aspect-ratio", default=None, help="bucket name, e.g. 16:9 (default: the preset's)")
    parser.add_argument("--num-samples", type=int, default=1)
    parser.add_argument("--device", choices=["cuda", "cpu"], default=None,
                        help="plan for a GPU run or a CPU-only run (default: cuda if --vram-gb is given or a GPU is present)")
    parser.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default=None, help="default: bf16 on a GPU, fp32 on a CPU")
    parser.add_argument("--text-encoder-quant", choices=["int8", "nf4"], default=None)
    parser.add_argument("--fp8-mmdit", action="store_true", help="MMDiT weights stored in fp8")
    parser.add_argument("--vram-gb", type=float, default=None, help="GPU memory to fit in, GiB (default: the detected GPU's)")
    parser.add_argument("--ram-gb", type=float, default=None, help="host RAM to fit in, GiB (default: what is available now)")
    parser.add_argument("--ckpt-dir", default=DEFAULT_CKPT_DIR, help="checkpoint folder (the text encoders' config.json, if present)")


def check_frames(num_frames: int, max_frames: int) -> int:
    from opensora.errors import UserError

    if num_frames < 1 or num_frames > max_frames or (num_frames - 1) % 4:
        raise UserError(f"num_frames {num_frames} is not allowed: use 4k+1 frames between 1 and {max_frames}")
    return num_frames


def format_table(plan, vram_gib, ram_gib) -> str:
    fitting = {row.profile for row in plan.fitting(vram_gib, ram_gib)}
    lines = [f"{'profile':<12}{'GPU GiB':>9}{'RAM GiB':>9}{'rel. time':>11}  fits"]
    for row in plan.rows:
        gpu = "-" if row.gpu_gib is None else f"{row.gpu_gib:.1f}"
        lines.append(f"{row.profile:<12}{gpu:>9}{row.ram_gib:>9.1f}{row.relative_time:>11.2f}  {'yes' if row.profile in fitting else 'no'}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from opensora.errors import UserError
    from opensora.memory.fit import refusal
    from opensora.memory.hardware import available_ram_gib, gpu_memory_gib
    from opensora.memory.planner import PlanRequest, plan
    from opensora.presets import FAMILY_V2, MAX_FRAMES, load_preset

    preset = load_preset(args.preset)
    if preset.family != FAMILY_V2:  # the sizes and constants are the MMDiT / HunyuanVideo VAE ones
        raise UserError(f"the memory planner covers Open-Sora 2.0 presets; preset {preset.name} is "
                        f"{preset.family_name}, which it does not support yet")
    defaults = preset.sampler
    num_frames = check_frames(defaults.num_frames if args.num_frames is None else args.num_frames, MAX_FRAMES)
    height, width = preset.image_size(args.resolution or defaults.resolution, args.aspect_ratio or defaults.aspect_ratio)
    if args.num_samples < 1:
        raise UserError(f"num_samples {args.num_samples} is out of range: allowed 1 to 64")
    vram = args.vram_gb if args.vram_gb is not None else gpu_memory_gib()
    device = args.device or ("cuda" if vram is not None else "cpu")
    ram = args.ram_gb if args.ram_gb is not None else available_ram_gib()
    request = PlanRequest(
        preset=preset, num_frames=num_frames, height=height, width=width, num_samples=args.num_samples,
        device=device, dtype=args.dtype or ("bf16" if device == "cuda" else "fp32"),
        text_encoder_quant=args.text_encoder_quant, fp8_mmdit=args.fp8_mmdit, ckpt_root=Path(args.ckpt_dir),
    )
    result = plan(request)
    quant = f", T5 {args.text_encoder_quant}" if args.text_encoder_quant else ""
    print(f"{preset.name}: {num_frames} frames at {height}x{width}, {request.dtype}{quant}, "
          f"{args.num_samples} sample(s), {device}")
    print(format_table(result, vram if device == "cuda" else None, ram))
    limits = " / ".join(
        part for part in (f"{vram:.1f} GiB GPU" if device == "cuda" and vram is not None else "",
                          f"{ram:.1f} GiB RAM" if ram is not None else "") if part
    ) or "no limit given"
    chosen = result.choose(vram if device == "cuda" else None, ram)
    if chosen is None:
        raise UserError(refusal(request, result, vram if device == "cuda" else None, ram))
    print(f"fastest profile that fits {limits}: {chosen.profile}")
    return 0
