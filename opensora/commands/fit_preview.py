"""`python -m opensora fit-preview --preset P`: fit the live preview's latent -> RGB map of P's VAE
and write it to presets/preview/NAME.toml (the app and `generate --preview` read it).

Clips: shapes-world clips rendered at the preset's default bucket sizes (the demo model's training
renderer), or --video files. Each is encoded with the preset's VAE (posterior mean); least squares
maps each latent pixel's channels to the mean colour of the pixels under it. The last quarter of
the clips is held out: their PSNR is printed and stored. The official VAEs need their weights
(--ckpt-dir), so their maps are made where those are.
"""

import argparse
import sys
from pathlib import Path

from opensora.errors import UserError
from opensora.presets import DEFAULT_CKPT_DIR

DEFAULT_CLIPS, DEFAULT_FRAMES, DEFAULT_SEED = 32, 17, 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", required=True, help="preset whose VAE to fit (name or TOML file)")
    parser.add_argument("--ckpt-dir", "--ckpt_dir", dest="ckpt_dir", default=DEFAULT_CKPT_DIR,
                        help="folder with the official checkpoints (default ./ckpts)")
    parser.add_argument("--clips", type=int, default=DEFAULT_CLIPS,
                        help=f"rendered clips to fit on, 4-1024 (default {DEFAULT_CLIPS}); ignored with --video")
    parser.add_argument("--frames", type=int, default=DEFAULT_FRAMES,
                        help=f"frames per clip, 4k+1 from 5 to 129 (default {DEFAULT_FRAMES})")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of the rendered clips (default 0)")
    parser.add_argument("--video", action="append", default=[], metavar="FILE",
                        help="fit on these videos instead of rendered clips (repeat; at least 2)")
    parser.add_argument("--out", type=Path, default=None, help="where to write (default presets/preview/NAME.toml)")
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available)")


def check_arguments(args: argparse.Namespace) -> None:
    if not 4 <= args.clips <= 1024:
        raise UserError(f"--clips {args.clips} is out of range: use 4-1024")
    if not 5 <= args.frames <= 129 or (args.frames - 1) % 4:
        raise UserError(f"--frames {args.frames} is not allowed: use 4k+1 from 5 to 129")
    if len(args.video) == 1:
        raise UserError("--video: give at least 2 videos (one is held out to measure the fit)")


def run(args: argparse.Namespace) -> int:
    from opensora.devices import check_device
    from opensora.presets import FAMILY_V2, load_preset
    from opensora.preview.projection import preview_data_path

    check_arguments(args)
    preset = load_preset(args.preset)
    if preset.family != FAMILY_V2:
        raise UserError(f"preset {preset.name}: the live preview is for Open-Sora 2.0 presets ({preset.family_name} "
                        "has its own sampler)")
    device, _ = check_device(args.device)
    out = args.out or preview_data_path(preset)

    import torch

    from opensora.io.atomic import atomic_write_text
    from opensora.preview.fit import fit_projection, pixels_at_latent_size, project, psnr
    from opensora.preview.projection import PreviewProjection, projection_toml

    vae = load_vae(preset, args.ckpt_dir, device)
    frames = encodable_frames(preset, args.frames)
    clips = video_clips(preset, args.video, frames) if args.video else rendered_clips(preset, args.clips, frames,
                                                                                       args.seed)
    latents, pixels = [], []
    with torch.no_grad():
        for k, clip in enumerate(clips):
            latent = vae.encode(clip[None].to(device), sample=False)[0].float().cpu()
            latents.append(latent)
            pixels.append(pixels_at_latent_size(clip, latent.shape, preset.vae.time_compression))
            print(f"encoded {k + 1}/{len(clips)}", file=sys.stderr)
    held = max(1, len(clips) // 4)
    weights, bias = fit_projection(latents[:-held], pixels[:-held])
    heldout = sum(psnr(project(z, weights, bias), p) for z, p in zip(latents[-held:], pixels[-held:])) / held
    projection = PreviewProjection(weights.tolist(), bias.tolist(), made_by=command_line(args), heldout_psnr_db=heldout)
    source = (f"{len(clips)} videos ({frames} frames)" if args.video else
              f"{len(clips)} rendered shapes-world clips ({frames} frames, {preset.sampler.resolution} buckets, "
              f"seed {args.seed})")
    description = (f"Live preview map of the VAE of preset {preset.name}: fitted on {source}; the last {held} held "
                   f"out: {heldout:.2f} dB against their pixels at latent size.")
    atomic_write_text(out, projection_toml(projection, description))
    print(f"held-out PSNR {heldout:.2f} dB on {held} clips; wrote {out}")
    return 0


def command_line(args: argparse.Namespace) -> str:
    """The command that reproduces the fit (non-default options only)."""
    parts = ["python -m opensora fit-preview", f"--preset {args.preset}"]
    if args.video:
        parts += [f"--video {v}" for v in args.video]
    elif args.clips != DEFAULT_CLIPS:
        parts.append(f"--clips {args.clips}")
    parts += [f"--frames {args.frames}"] * (args.frames != DEFAULT_FRAMES)
    parts += [f"--seed {args.seed}"] * (args.seed != DEFAULT_SEED and not args.video)
    return " ".join(parts)


def encodable_frames(preset, frames: int) -> int:
    """The clip length to encode for a requested 4k+1: the Video DC-AE (non-causal) encodes 4k frames."""
    from opensora.configs import DCAEConfig

    return frames - 1 if isinstance(preset.vae, DCAEConfig) else frames


def load_vae(preset, ckpt_dir, device: str):
    """Only the VAE of an official or bundled preset; a random preset's VAE as `load_components`
    draws it (after the MMDiT, from the same seed)."""
    import torch

    from opensora.checkpoints import checkpoint_root, require_files
    from opensora.loading import load_components, load_vae_weights

    if preset.weights == "random":
        return load_components(preset, ckpt_dir, device)[1]
    require_files(preset, ckpt_dir, roles=("vae",))
    return load_vae_weights(checkpoint_root(preset, ckpt_dir) / preset.files.vae, preset, torch.float32, device)


def rendered_clips(preset, count: int, frames: int, seed: int) -> list:
    """`count` shapes-world clips, (3, T, H, W) in [-1, 1], cycling through the default resolution's
    aspect ratios."""
    import numpy as np
    import torch

    from training.demo.shapes_world import render_clip, sample_spec

    sizes = preset.buckets[preset.sampler.resolution]
    names, rng = sorted(sizes), np.random.default_rng(seed)
    clips = []
    for k in range(count):
        spec = sample_spec(rng, num_frames=frames, aspect_ratio=names[k % len(names)], frame_sizes=sizes)
        clips.append(torch.from_numpy(render_clip(spec)).permute(3, 0, 1, 2).float() / 127.5 - 1)
    return clips


def video_clips(preset, paths: list[str], frames: int) -> list:
    """The first `frames` frames of each video at the preset's default bucket size (its own aspect
    ratio's bucket is not looked up: the fit does not care about framing)."""
    from opensora.io.reference import load_reference

    height, width = preset.image_size(preset.sampler.resolution, preset.sampler.aspect_ratio)
    clips = []
    for path in paths:
        clip = load_reference(path, height, width, num_frames=frames)
        if clip.shape[1] < frames:
            raise UserError(f"--video {path} has {clip.shape[1]} frames; --frames asks for {frames}")
        clips.append(clip)
    return clips
