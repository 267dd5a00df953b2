"""`python -m training <command>`: the trainer, data curation and the demo-model lab.

One small module per command: training/commands/ (the trainer and data curation) and
training/demo/commands/ (the tools that make the bundled demo model).

Adding a command: import its module below and add one line to COMMANDS.
"""

from __future__ import annotations

from opensora import subcommands
from training.commands import finetune, prepare
from training.demo.commands import (
    average_weights, demo_recipe, eval_demo, generate_latents, grow_mmdit, render_shapes, shard_weights,
    train_text_encoders, train_vae,
)

COMMANDS = {
    "render-shapes": (render_shapes, "render the procedural shapes-world dataset (mp4 + png + data.csv)"),
    "generate-latents": (generate_latents, "the MMDiT's own latents of rendered clips, for decoder training (demo model)"),
    "train-vae": (train_vae, "train a preset's VAE on rendered shapes-world clips (demo model; resumable)"),
    "train-text-encoders": (train_text_encoders, "fit a word-level tokenizer and train tiny T5 + CLIP text encoders on shapes-world captions (demo model)"),
    "grow-mmdit": (grow_mmdit, "deepen a trained MMDiT by single blocks that start as the identity (demo model)"),
    "average-weights": (average_weights, "the uniform average of several weight files of one model (a model soup)"),
    "eval-demo": (eval_demo, "held-out accuracies of the demo model (colour, shape, motion, background, i2v) as JSON"),
    "demo-shard-weights": (shard_weights, "store the demo MMDiT and VAE as shards under 10 MB with a safetensors index"),
    "demo-recipe": (demo_recipe, "every step that makes the demo model, in order, with the committed configs (--scale smoke|full)"),
    "finetune": (finetune, "LoRA or full fine-tune of a preset's MMDiT on a video CSV (flow matching, resumable)"),
    "prepare": (prepare, "data curation: a folder of raw videos (or a CSV) to a training CSV, stage by stage (resumable)"),
    "prepare-probe": (prepare.PROBE, "curation stage: fps, frames, size, duration, codec, rotation of each video"),
    "prepare-scenes": (prepare.SCENES, "curation stage: one row (and clip) per scene, PySceneDetect AdaptiveDetector"),
    "prepare-motion": (prepare.MOTION, "curation stage: VMAF motion score and optical flow per clip; range filter"),
    "prepare-ocr": (prepare.OCR, "curation stage: text area per clip (RapidOCR, offline); filter"),
    "prepare-aesthetic": (prepare.AESTHETIC, "curation stage: CLIP aesthetic score from local weights; filter"),
    "prepare-caption": (prepare.CAPTION, "curation stage: captions from a vision model on an OpenAI-compatible server"),
    "prepare-filter": (prepare.FILTER, "curation stage: --where filter, train/val split by source video, bucket report"),
}


def build_parser():
    return subcommands.build_parser("python -m training", __doc__.splitlines()[0], COMMANDS)


def main(argv: list[str] | None = None) -> int:
    return subcommands.run_command(build_parser(), COMMANDS, argv)
