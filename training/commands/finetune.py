"""`python -m training finetune`: LoRA or full fine-tune of a preset's MMDiT on a video CSV.

Settings come from a training TOML (--config, default presets/train-default.toml); every flag
below overrides one value of it. Outputs land in --output-dir (see training/README.md).
"""

from __future__ import annotations

import argparse
import json

from training.config import LR_SCHEDULES, MIXED_PRECISION, MODES, TrainConfig

# (flag, dotted config name, type, help). Defaults shown in --help are the built-in ones; the
# --config TOML may change them.
OPTIONS: list[tuple[str, str, type, str]] = [
    ("--preset", "preset", str, "model preset to fine-tune: a name in presets/ (e.g. tiny-random, demo, opensora-v2-256px) or a TOML path"),
    ("--data", "data", str, "training CSV in the Open-Sora format: path,text[,num_frames,height,width,fps,motion_score]; relative paths are relative to the CSV"),
    ("--output-dir", "output_dir", str, "run folder: metrics.jsonl, status.json, train.log, checkpoints/, and lora.safetensors or model.safetensors at the end"),
    ("--buckets", "buckets", str, "bucket table (resolutions, aspect ratios, frame counts, batch sizes): presets/buckets-NAME.toml by NAME, or a TOML path; unset: the preset's own, presets/buckets-PRESET.toml or buckets-RESOLUTION.toml"),
    ("--ckpt-dir", "ckpt_dir", str, "folder with the official checkpoints (official presets only)"),
    ("--mode", "mode", str, f"what is trained: {' or '.join(MODES)} (lora: a small adapter; full: every MMDiT weight)"),
    ("--init", "init", str, "preset: start from the preset's MMDiT weights; random: train the MMDiT from scratch (mode full; the VAE and text encoders still come from the preset's files)"),
    ("--steps", "steps", int, "optimizer steps in total; a resumed run continues up to this count"),
    ("--seed", "seed", int, "seeds the data order, crops, noise, timesteps, cond types and caption dropout"),
    ("--lr", "optim.lr", float, "peak learning rate of AdamW"),
    ("--lr-schedule", "optim.schedule", str, f"learning-rate shape after the warmup: {', '.join(LR_SCHEDULES)}"),
    ("--warmup-steps", "optim.warmup_steps", int, "steps of linear learning-rate warmup from 0"),
    ("--weight-decay", "optim.weight_decay", float, "AdamW weight decay"),
    ("--grad-clip", "optim.grad_clip", float, "clip the global gradient norm to this value (0: no clipping)"),
    ("--grad-accum", "optim.grad_accum", int, "batches whose gradients are summed per optimizer step"),
    ("--lora-rank", "lora.rank", int, "LoRA rank r (--mode lora)"),
    ("--lora-alpha", "lora.alpha", float, "LoRA alpha; the update is scaled by alpha / rank"),
    ("--lora-dropout", "lora.dropout", float, "dropout on the LoRA input during training"),
    ("--text-dropout", "loss.text_dropout", float, "probability of training a sample with an empty caption (teaches the unconditional branch of guidance)"),
    ("--motion-score", "loss.motion_score", int, "motion score written into captions of CSV rows without one (1-15; -1: the preset's sampler default)"),
    ("--ema-decay", "ema.decay", float, "keep an exponential moving average of the trained weights with this decay (0: off); the final file then holds the EMA weights"),
    ("--mixed-precision", "runtime.mixed_precision", str, f"compute precision: {', '.join(MIXED_PRECISION)} (fp16: GPU only)"),
    ("--device", "runtime.device", str, "auto (GPU when there is one), cpu or cuda; several GPUs: accelerate launch"),
    ("--threads", "runtime.threads", int, "torch CPU threads (0: torch's default); 1 is fastest for tiny models on a busy CPU"),
    ("--checkpoint-every", "checkpoint.every", int, "save a checkpoint every N steps (and at the end, and on SIGTERM/SIGINT)"),
    ("--keep-last", "checkpoint.keep_last", int, "complete checkpoints to keep; older ones are deleted"),
    ("--log-every", "log.every", int, "write a metrics.jsonl line every N steps"),
    ("--eval-every", "log.eval_every", int, "score the fixed eval batch every N steps (0: only at the start and the end)"),
    ("--num-workers", "loader.num_workers", int, "DataLoader worker processes (0: decode in the training process, exact resume)"),
    ("--cache-dir", "loader.cache_dir", str, "where --cache-latents / --cache-text keep their files (default OUTPUT_DIR/cache)"),
]
METAVARS = {
    "--preset": "NAME|FILE", "--data": "CSV", "--output-dir": "DIR", "--buckets": "NAME|FILE", "--ckpt-dir": "DIR",
    "--mode": "|".join(MODES), "--init": "preset|random", "--lr-schedule": "|".join(LR_SCHEDULES), "--mixed-precision": "|".join(MIXED_PRECISION),
    "--device": "auto|cpu|cuda", "--cache-dir": "DIR",
}
SWITCHES: list[tuple[str, str, str]] = [
    ("--gradient-checkpointing", "runtime.gradient_checkpointing", "recompute block activations in the backward pass: less memory, slower"),
    ("--async-save", "checkpoint.async_save", "write checkpoints in a background thread while training continues"),
    ("--tensorboard", "log.tensorboard", "also write TensorBoard events to OUTPUT_DIR/tensorboard (when tensorboard is installed)"),
    ("--cache-latents", "loader.cache_latents", "encode every sample once with the VAE (fixed crop) and train from the cached posteriors"),
    ("--cache-text", "loader.cache_text", "keep the T5/CLIP embeddings of every caption on disk"),
    ("--include-conditioned-frames", "loss.include_conditioned_frames", "count the reference (conditioned) frames in the loss, as the official training does"),
]


def _default(dotted: str):
    value = TrainConfig()
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def _default_text(dotted: str) -> str:
    value = _default(dotted)
    if dotted == "buckets":
        return "built-in default: the preset's table"
    return "required, here or in the --config TOML" if value == "" else f"built-in default: {value!r}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="default", metavar="NAME|FILE",
                        help="training settings TOML: presets/train-NAME.toml by NAME, or a path; flags override it")
    for flag, dotted, kind, help_text in OPTIONS:
        metavar = METAVARS.get(flag, "N" if kind is int else "X" if kind is float else "TEXT")
        parser.add_argument(flag, dest=dotted, type=kind, default=None, metavar=metavar,
                            help=f"{help_text} ({_default_text(dotted)})")
    for flag, dotted, help_text in SWITCHES:
        parser.add_argument(flag, dest=dotted, action=argparse.BooleanOptionalAction, default=None,
                            help=f"{help_text} (built-in default: {'on' if _default(dotted) else 'off'})")
    parser.add_argument("--lora-targets", dest="lora.target_modules", default=None, metavar="NAMES",
                        help="comma-separated layer names the LoRA adapts (diffusers names, matched as suffixes, "
                        f"e.g. to_q,to_v; built-in default: {','.join(_default('lora.target_modules'))})")
    parser.add_argument("--cond-mix", default=None, metavar="TYPE=W,...",
                        help="relative weights of the cond types per sample, e.g. t2v=0.5,i2v_head=0.5 (unlisted types get 0); "
                        "types: t2v, i2v_head, i2v_tail, i2v_loop, v2v_head, v2v_tail, v2v_head_easy, v2v_tail_easy")
    parser.add_argument("--resume", default=None, metavar="auto|none|DIR",
                        help="auto: continue from the newest complete checkpoint in OUTPUT_DIR/checkpoints (start fresh "
                        "when there is none); DIR: from that step-NNNNNN folder; none (default): a new run, refused "
                        "when OUTPUT_DIR already holds checkpoints")
    parser.add_argument("--print-config", action="store_true", help="print the resolved settings as JSON and exit")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    from opensora.errors import UserError
    from training.config import apply_overrides, load_train_config, validate

    config = load_train_config(args.config)
    overrides = {dotted: getattr(args, dotted) for _, dotted, _, _ in OPTIONS}
    overrides.update({dotted: getattr(args, dotted) for _, dotted, _ in SWITCHES})
    targets = getattr(args, "lora.target_modules")
    if targets is not None:
        overrides["lora.target_modules"] = [t.strip() for t in targets.split(",") if t.strip()]
    apply_overrides(config, overrides)
    if args.cond_mix is not None:
        weights = {}
        for item in args.cond_mix.split(","):
            name, sep, value = item.partition("=")
            try:
                weights[name.strip()] = float(value)
            except ValueError:
                raise UserError(f"--cond-mix item {item!r} is not TYPE=WEIGHT (e.g. i2v_head=0.3)") from None
            if not sep or name.strip() not in config.conditioning.weights():
                raise UserError(f"--cond-mix item {item!r}: unknown cond type; allowed: {', '.join(config.conditioning.weights())}")
        apply_overrides(config, {f"conditioning.{name}": weights.get(name, 0.0) for name in config.conditioning.weights()})
    return validate(config)


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    if args.print_config:
        print(config.to_json())
        return 0
    from training.config import check_trainable_preset
    from training.trainer import train

    check_trainable_preset(config)
    result = train(config, resume=args.resume)
    summary = {
        "state": result.state, "step": result.step, "total_steps": result.total_steps, "output": result.output,
        "first_loss": result.first_loss, "last_loss": result.last_loss,
        "eval_loss_start": result.eval_loss_start, "eval_loss_end": result.eval_loss_end,
        "samples_per_s": round(result.samples_per_s, 3), "seconds": result.seconds, "resumed_from": result.resumed_from,
    }
    print(json.dumps(summary))
    return 0
