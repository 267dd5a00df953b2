"""`python -m training train-vae`: train a preset's HunyuanVideo VAE on rendered shapes-world clips.

Writes the weights (official key layout, scale_factor in the safetensors metadata), stores
scale_factor = 1 / latent std in the preset TOML's [vae] table, and leaves checkpoints and
summary.json (PSNR on full 33-frame clips) in --work-dir.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from opensora.presets import load_preset
from training.vae_trainer import VAETrainConfig, train_vae, write_scale_factor

DEFAULTS = VAETrainConfig()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="demo", help="preset whose [vae] is trained: a name in presets/ or a TOML path (default demo)")
    parser.add_argument("--out", required=True, help="weights file to write (.safetensors)")
    parser.add_argument("--work-dir", required=True, help="run folder: checkpoints/ and summary.json")
    parser.add_argument("--steps", type=int, default=DEFAULTS.steps, help=f"optimizer steps (default {DEFAULTS.steps})")
    parser.add_argument("--seed", type=int, default=DEFAULTS.seed, help=f"seeds init, batches and noise (default {DEFAULTS.seed})")
    parser.add_argument("--resume", choices=("auto", "no"), default="no",
                        help="auto: continue from the newest complete checkpoint in --work-dir (default no)")
    parser.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size, help=f"clips per step (default {DEFAULTS.batch_size})")
    parser.add_argument("--crop-frames", type=int, default=DEFAULTS.crop_frames, help=f"frames per crop, 4k+1 (default {DEFAULTS.crop_frames})")
    parser.add_argument("--crop-size", type=int, default=DEFAULTS.crop_size, help=f"crop side in pixels (default {DEFAULTS.crop_size})")
    parser.add_argument("--lr", type=float, default=DEFAULTS.lr, help=f"peak AdamW learning rate (default {DEFAULTS.lr})")
    parser.add_argument("--l1-weight", type=float, default=DEFAULTS.l1_weight, help=f"weight of the L1 term (default {DEFAULTS.l1_weight})")
    parser.add_argument("--edge-weight", type=float, default=DEFAULTS.edge_weight,
                        help="extra loss weight of pixels within 2 px of an edge of the target, >= 0 "
                             f"(default {DEFAULTS.edge_weight})")
    parser.add_argument("--init", default=DEFAULTS.init, metavar="block_mean|random|FILE",
                        help="start weights: block_mean (colour-preserving, training/vae_init.py), random, or a VAE "
                             f".safetensors to continue from (default {DEFAULTS.init})")
    parser.add_argument("--block-mean-logvar", type=float, default=DEFAULTS.block_mean_logvar,
                        help="posterior log-variance the block_mean init starts with, -20 to 0; with --train decoder "
                             f"it stays (default {DEFAULTS.block_mean_logvar})")
    parser.add_argument("--train", choices=("all", "decoder"), default=DEFAULTS.train,
                        help="decoder: fine-tune only the decoder of --init FILE or block_mean; the encoder and its latents stay "
                             "as they are, and so does scale_factor with --init FILE (with block_mean add --keep-scale), so "
                             f"an MMDiT trained on them still fits (default {DEFAULTS.train})")
    parser.add_argument("--anchor-weight", type=float, default=DEFAULTS.anchor_weight,
                        help="weight of the squared drift of the latents from those of --init FILE (in the "
                             "MMDiT's unit-variance units), so an MMDiT trained on them adapts quickly; "
                             f"0 = off (default {DEFAULTS.anchor_weight})")
    parser.add_argument("--encoder-lr-scale", type=float, default=DEFAULTS.encoder_lr_scale,
                        help="encoder-side learning rate as a fraction of --lr, in (0, 1] "
                             f"(default {DEFAULTS.encoder_lr_scale})")
    parser.add_argument("--shape-code-weight", type=float, default=DEFAULTS.shape_code_weight,
                        help="weight of the loss that makes the last 3 latent channels name the object's shape "
                             f"(training/shape_code.py), 0 to 1000; 0 = off (default {DEFAULTS.shape_code_weight})")
    parser.add_argument("--code-blur", type=float, default=DEFAULTS.code_blur,
                        help="share of clips decoded with every channel but the shape code blurred over "
                             "--code-blur-cells latent cells, 0 to 1: the decoder learns to draw outlines from the "
                             "code (with --train decoder, of a VAE trained with --shape-code-weight) "
                             f"(default {DEFAULTS.code_blur})")
    parser.add_argument("--code-blur-cells", type=int, default=DEFAULTS.code_blur_cells, metavar="N",
                        help="side of --code-blur's window in latent cells, odd, 1 to 15 (default "
                             f"{DEFAULTS.code_blur_cells})")
    parser.add_argument("--code-blur-noise", type=float, default=DEFAULTS.code_blur_noise, metavar="STD",
                        help="std of noise added to the blurred channels, in the MMDiT's units, 0 to 10: rough like "
                             f"an MMDiT's samples (default {DEFAULTS.code_blur_noise})")
    parser.add_argument("--generated-latents", default=DEFAULTS.generated_latents, metavar="FILE",
                        help="with --train decoder: every other step decodes the MMDiT's own latents from this file "
                             "(python -m training generate-latents) against their rendered clips")
    parser.add_argument("--wake-channels", type=float, default=DEFAULTS.wake_channels, metavar="STD",
                        help="before training, lift latent channels of --init FILE that carry almost no signal to this "
                             "std (the reconstruction is unchanged; training can then use them); 0 = off "
                             f"(default {DEFAULTS.wake_channels})")
    parser.add_argument("--keep-scale", action="store_true",
                        help="keep the preset's scale_factor instead of 1 / latent std, so an MMDiT trained on the "
                             "old latents sees its familiar channels at the same scale")
    parser.add_argument("--image-fraction", type=float, default=DEFAULTS.image_fraction,
                        help=f"share of steps on single frames, what i2v encodes for frame 0 (default {DEFAULTS.image_fraction})")
    parser.add_argument("--checkpoint-every", type=int, default=DEFAULTS.checkpoint_every,
                        help=f"save a resumable checkpoint every N steps (default {DEFAULTS.checkpoint_every})")
    parser.add_argument("--eval-clips", type=int, default=DEFAULTS.eval_clips,
                        help=f"full-size clips per eval set for PSNR and the latent std (default {DEFAULTS.eval_clips})")
    parser.add_argument("--eval-frames", type=int, default=DEFAULTS.eval_frames,
                        help=f"frames per eval clip (default {DEFAULTS.eval_frames}, the demo clip length)")
    parser.add_argument("--threads", type=int, default=DEFAULTS.threads, help=f"torch CPU threads (default {DEFAULTS.threads})")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default=DEFAULTS.device,
                        help=f"where to train: auto = cuda when torch sees a GPU (default {DEFAULTS.device})")
    parser.add_argument("--data-workers", type=int, default=DEFAULTS.data_workers, metavar="N",
                        help="processes rendering the next batches while a step trains, 0 to 64; the batches stay the "
                             f"same (default {DEFAULTS.data_workers})")
    parser.add_argument("--no-update-preset", action="store_true", help="do not write scale_factor into the preset TOML")


def run(args: argparse.Namespace) -> int:
    preset = load_preset(args.preset)
    cfg = VAETrainConfig(
        steps=args.steps, seed=args.seed, batch_size=args.batch_size, crop_frames=args.crop_frames,
        crop_size=args.crop_size, lr=args.lr, l1_weight=args.l1_weight, edge_weight=args.edge_weight,
        anchor_weight=args.anchor_weight, encoder_lr_scale=args.encoder_lr_scale,
        shape_code_weight=args.shape_code_weight, code_blur=args.code_blur,
        code_blur_cells=args.code_blur_cells, code_blur_noise=args.code_blur_noise,
        device=args.device, data_workers=args.data_workers, generated_latents=args.generated_latents,
        wake_channels=args.wake_channels, keep_scale=args.keep_scale, init=args.init, train=args.train,
        block_mean_logvar=args.block_mean_logvar,
        image_fraction=args.image_fraction, checkpoint_every=args.checkpoint_every,
        eval_clips=args.eval_clips, eval_frames=args.eval_frames, threads=args.threads, warmup_steps=min(DEFAULTS.warmup_steps, max(args.steps // 10, 1)),
    )
    summary = train_vae(preset.vae, cfg, Path(args.out), Path(args.work_dir), resume=args.resume == "auto")
    if not args.no_update_preset:
        write_scale_factor(preset.path, summary["scale_factor"])
    shown = ("scale_factor", "eval_train_combos", "eval_held_out_combos", "shape_code_read_right")
    print(json.dumps({k: summary[k] for k in shown if k in summary}, indent=1))
    return 0
