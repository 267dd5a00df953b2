"""`python -m opensora extend VIDEO --prompt ... --seconds N`: continue a video into a longer one.

Parts made with v2v_head, each from the last 33 frames of the video so far, joined without the
overlap into one OUTPUT_DIR/NNNN.mp4 whose sidecar lists every part (see `opensora.extend`). The
parts take the source's own preset and sampler settings when it carries them (made by this app);
flags given here win.

    python -m opensora extend outputs/0003.mp4 --prompt "the circle keeps moving right" --seconds 8
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from opensora.errors import UserError
from opensora.presets import DEFAULT_CKPT_DIR, DEFAULT_OUTPUT_DIR


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("video", type=Path, help="the video to continue (at least 33 frames)")
    parser.add_argument("--seconds", type=float, required=True,
                        help="length of the finished video in seconds, at the preset's fps")
    parser.add_argument("--prompt", default=None, help="what happens next (default: the video's own prompt)")
    parser.add_argument("--negative-prompt", default=None, help="text for the unconditional branches")
    parser.add_argument("--preset", default=None, help="preset name or TOML file (default: the video's own, else "
                        "official 256px if its files are in --ckpt-dir, else the demo model)")
    parser.add_argument("--part-frames", type=int, default=None, help="frames per part, 4k+1 above 33 (default: "
                        "the preset's default frames if above 33, else its frame limit)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the first part; part k uses seed + k "
                        "(random if omitted, reported)")
    parser.add_argument("--num-steps", type=int, default=None, help="denoising steps (default: the video's, else the "
                        "preset's)")
    parser.add_argument("--guidance", type=float, default=None, help="text guidance")
    parser.add_argument("--guidance-img", type=float, default=None, help="image (video) guidance")
    parser.add_argument("--motion-score", default=None, help="1-15")
    parser.add_argument("--lora", action="append", default=None, metavar="FILE[:SCALE]",
                        help="merge a LoRA (repeat to stack; default: the video's own)")
    parser.add_argument("--ckpt-dir", default=DEFAULT_CKPT_DIR, help="folder with the official checkpoints")
    parser.add_argument("--output-dir", default=DEFAULT_OUTPUT_DIR, help="where the extended video goes")
    parser.add_argument("--dtype", default=None, help="fp32, bf16 or fp16 (default: bf16 on GPU, fp32 on CPU)")
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available)")


class PartsProgress:
    """The extension's progress on stderr: its messages as lines, each part's steps as a tqdm bar."""

    def __init__(self):
        self.bar = None

    def message(self, text: str) -> None:
        self.close()
        print(text, file=sys.stderr)

    def begin(self, num_samples: int) -> None:
        from tqdm import tqdm

        self.close()
        self.bar = tqdm(desc="steps", unit="step", file=sys.stderr)

    def __call__(self, step: int, total: int, _latent=None) -> None:
        if step == 0:
            self.bar.reset(total=total)
        self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _source_settings(video: Path) -> dict | None:
    """The video's own settings (its mp4 tag), or None for a video made elsewhere."""
    from opensora.io.embedded_settings import embedded_settings

    try:
        return embedded_settings(video)
    except UserError:
        return None  # not ours: the preset's defaults; an unreadable video fails in the plan


def run(args: argparse.Namespace) -> int:
    from opensora.checkpoints import default_preset_name
    from opensora.devices import check_device
    from opensora.extend import extension_request, plan_extension, run_extension
    from opensora.generation_settings import LoraChoice
    from opensora.io.outputs import OutputWriter
    from opensora.lora import parse_lora_spec
    from opensora.pipeline_cache import PipelineCache
    from opensora.presets import load_preset

    device, dtype = check_device(args.device, args.dtype)
    request = extension_request(_source_settings(args.video), args.prompt)
    preset = load_preset(args.preset or request.preset or default_preset_name(args.ckpt_dir))
    given = dict(negative_prompt=args.negative_prompt, num_steps=args.num_steps, guidance=args.guidance,
                 guidance_img=args.guidance_img, motion_score=args.motion_score)
    request = replace(request, seed=args.seed, **{k: v for k, v in given.items() if v is not None})
    if args.lora is not None:
        request = replace(request, loras=[LoraChoice(str(p), s) for p, s in map(parse_lora_spec, args.lora)])
    if not request.prompt:
        raise UserError(f"{args.video} carries no prompt of its own: give --prompt")
    pipelines = PipelineCache(args.ckpt_dir, device, dtype)  # loads nothing yet
    plan = plan_extension(args.video, request, args.seconds, preset, part_frames=args.part_frames,
                          options=pipelines.options, ckpt_dir=args.ckpt_dir)
    OutputWriter(args.output_dir).check_writable()
    print(f"preset {preset.name}: {len(plan.parts)} part(s) of v2v_head, {plan.source_frames} -> {plan.frames} frames "
          f"({plan.rule})", file=sys.stderr)

    progress = PartsProgress()
    try:
        result = run_extension(plan, preset, pipelines, args.output_dir, progress)
    finally:
        progress.close()
        pipelines.unload()  # e.g. the disk memory profile's block files
    for notice in result.notices:
        print(f"notice: {notice}", file=sys.stderr)
    print(result.paths[0])
    return 0
