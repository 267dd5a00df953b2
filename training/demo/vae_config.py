"""Settings of `python -m training train-vae`: one dataclass, its flags generated from it
(training/dataclass_flags.py), every range checked by `validate()` before the model is built.

Kept free of torch imports so `--help` is instant.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from opensora.configs import VAEConfig
from opensora.errors import UserError
from training.config import DEVICES, LR_SCHEDULES, SEED_MAX
from training.demo.shapes_world import DEFAULT_NUM_FRAMES, SHAPES

TRAIN_PARTS = ("all", "decoder")
INITS = ("block_mean", "random")  # or a VAE .safetensors file (or shard index) to continue from
SHAPE_CODE_CHANNELS = len(SHAPES)  # one per shape, the last latent channels (training/demo/shape_code.py)


def _help(text: str, **extra) -> dict:
    return {"help": text, **extra}


@dataclass
class VAETrainConfig:
    steps: int = field(default=1200, metadata=_help("optimizer steps in total; a resumed run continues up to this count"))
    batch_size: int = field(default=4, metadata=_help("clips per step"))
    crop_frames: int = field(default=9, metadata=_help("frames per crop, 4k+1 (two latent frames after the causal first one)"))
    crop_size: int = field(default=64, metadata=_help("crop side in pixels"))
    image_fraction: float = field(default=0.2, metadata=_help("share of steps on single frames (what i2v encodes for frame 0), 0 to 1"))
    image_batch_size: int = field(default=8, metadata=_help("frames per single-frame step"))
    init: str = field(default="block_mean", metadata=_help(
        "start weights: block_mean (colour-preserving, training/demo/vae_init.py), random, or a VAE .safetensors "
        "(or shard index) to continue from", metavar="block_mean|random|FILE"))
    train: str = field(default="all", metadata=_help(
        "decoder: fine-tune only post_quant_conv + decoder; the encoder, its latents and (with --init FILE) the "
        "scale_factor stay bit for bit, so an MMDiT trained on them still fits", choices=TRAIN_PARTS))
    lr: float = field(default=3e-4, metadata=_help("peak AdamW learning rate"))
    schedule: str = field(default="cosine", metadata=_help(
        "learning-rate shape after the warmup (diffusers' get_scheduler)", choices=LR_SCHEDULES))
    warmup_steps: int = field(default=50, metadata=_help("linear warmup steps from 0, at most a tenth of the run"))
    weight_decay: float = field(default=0.0, metadata=_help("AdamW weight decay"))
    grad_clip: float = field(default=1.0, metadata=_help("clip the global gradient norm to this value (0: no clipping)"))
    kl_weight: float = field(default=1e-6, metadata=_help("weight of the KL term (summed over latents / pixel count)"))
    l1_weight: float = field(default=0.0, metadata=_help("weight of the L1 term"))
    mse_weight: float = field(default=1.0, metadata=_help("weight of the MSE term"))
    edge_weight: float = field(default=0.0, metadata=_help(
        "extra loss weight of pixels within 2 px of an edge of the target (corners, tips), >= 0"))
    keep_scale: bool = field(default=False, metadata=_help(
        "keep the preset's scale_factor instead of 1 / latent std, so an MMDiT trained on the old latents "
        "sees them at the same scale"))
    shape_code_weight: float = field(default=0.0, metadata=_help(
        "weight of the loss that makes the last 3 latent channels name the object's shape "
        "(training/demo/shape_code.py), 0 (off) to 1000; needs --train all"))
    code_blur: float = field(default=0.0, metadata=_help(
        "share of clips decoded with every channel but the shape code blurred over --code-blur-cells cells, "
        "0 to 1: the decoder learns to draw outlines from the code"))
    code_blur_cells: int = field(default=3, metadata=_help("side of --code-blur's window in latent cells, odd, 1 to 15"))
    code_blur_noise: float = field(default=0.0, metadata=_help(
        "std of noise added to the blurred channels, in the MMDiT's units, 0 to 10 (rough like an MMDiT's samples)"))
    generated_latents: str = field(default="", metadata=_help(
        "with --train decoder: every other step decodes the MMDiT's own latents from this file "
        "(python -m training generate-latents) against their rendered clips", metavar="FILE"))
    seed: int = field(default=0, metadata=_help("seeds init, batches and noise"))
    checkpoint_every: int = field(default=100, metadata=_help("save a resumable checkpoint every N steps"))
    log_every: int = field(default=10, metadata=_help("write a metrics.jsonl line every N steps"))
    eval_clips: int = field(default=8, metadata=_help("full-size clips per eval set for PSNR and the latent std"))
    eval_frames: int = field(default=DEFAULT_NUM_FRAMES, metadata=_help("frames per eval clip"))
    threads: int = field(default=2, metadata=_help("torch CPU threads"))
    device: str = field(default="auto", metadata=_help("where to train: auto = cuda when torch sees a GPU", choices=DEVICES))
    data_workers: int = field(default=0, metadata=_help(
        "processes rendering the next batches while the step runs (the same batches as without), 0 to 64"))

    def to_dict(self) -> dict:
        return asdict(self)

    def warmup(self) -> int:
        return min(self.warmup_steps, max(self.steps // 10, 1))

    def init_is_file(self) -> bool:
        return self.init not in INITS

    def validate(self, vae: VAEConfig) -> "VAETrainConfig":
        """Every value in its range and every combination allowed, for the preset's VAE `vae`."""
        ranges = {
            "steps": (1, 10_000_000), "batch_size": (1, 1024), "image_batch_size": (1, 1024), "crop_size": (8, 4096),
            "image_fraction": (0.0, 1.0), "lr": (1e-9, 1.0), "warmup_steps": (0, 10_000_000),
            "weight_decay": (0.0, 1.0), "grad_clip": (0.0, 1e6), "kl_weight": (0.0, 1e6), "l1_weight": (0.0, 1e6),
            "mse_weight": (0.0, 1e6), "edge_weight": (0.0, 1e6), "shape_code_weight": (0.0, 1000.0),
            "code_blur": (0.0, 1.0), "code_blur_noise": (0.0, 10.0), "seed": (0, SEED_MAX),
            "checkpoint_every": (1, 10_000_000), "log_every": (1, 10_000_000), "eval_clips": (1, 10_000),
            "eval_frames": (1, 129), "threads": (1, 1024), "data_workers": (0, 64),
        }
        for name, (low, high) in ranges.items():
            value = getattr(self, name)
            if not low <= value <= high:
                raise UserError(f"{name} is {value!r}; allowed: {low!r} to {high!r}")
        if (self.crop_frames - 1) % vae.time_compression:
            raise UserError(f"crop_frames is {self.crop_frames}; allowed: {vae.time_compression}k+1 frames")
        if self.code_blur_cells not in range(1, 16, 2):
            raise UserError(f"code_blur_cells is {self.code_blur_cells}; allowed: an odd number from 1 to 15")
        for name, allowed in (("train", TRAIN_PARTS), ("schedule", LR_SCHEDULES), ("device", DEVICES)):
            if getattr(self, name) not in allowed:
                raise UserError(f"{name} is {getattr(self, name)!r}; allowed: {', '.join(map(repr, allowed))}")
        if self.init_is_file() and not self.init.endswith((".safetensors", ".safetensors.index.json")):
            raise UserError(f"init is {self.init!r}; allowed: 'block_mean', 'random' or a VAE .safetensors file")
        if self.train == "decoder" and self.init == "random":
            raise UserError("train 'decoder' keeps the encoder as it starts: init must be 'block_mean' or a VAE "
                            ".safetensors file")
        if self.shape_code_weight > 0 and self.train != "all":
            raise UserError("shape_code_weight teaches the encoder to write the shape: it needs train 'all'")
        # code_blur alone suits a decoder-only run on a VAE whose encoder already writes the code.
        if (self.shape_code_weight > 0 or self.code_blur > 0) and vae.latent_channels <= SHAPE_CODE_CHANNELS:
            raise UserError(f"the shape code needs more than {SHAPE_CODE_CHANNELS} latent channels (it takes the last "
                            f"{SHAPE_CODE_CHANNELS}); the preset has {vae.latent_channels}")
        if self.generated_latents:
            if self.train != "decoder":
                raise UserError("generated_latents trains the decoder on the MMDiT's latents of a fixed encoder: it "
                                "needs train 'decoder'")
            if self.crop_size % vae.spatial_compression:
                raise UserError(f"crop_size {self.crop_size} and crop_frames {self.crop_frames} must fit whole latent "
                                f"cells for generated latents: multiples of {vae.spatial_compression} pixels and "
                                f"{vae.time_compression}k+1 frames")
        return self
