"""Train the demo preset's HunyuanVideo VAE on shapes-world clips rendered on the fly.

nanoGPT-style: one loop, one batch per step, an AdamW optimizer with warmup + cosine decay.
Every batch is drawn from `np.random.default_rng([seed, step])`, so a resumed run sees exactly
the batches an uninterrupted run would have seen, with nothing but weights and optimizer state
in the checkpoint.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import re
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from opensora.checkpoints import load_checked
from opensora.errors import UserError
from opensora.io.outputs import save_safetensors_atomic
from opensora.models.hunyuan_vae import HunyuanVAE, VAEConfig
from training.checkpointing import CheckpointData, CheckpointSaver, latest_checkpoint, read_checkpoint, remove_incomplete
from training.vae_init import init_block_mean_vae, standardize_latent_channels, wake_latent_channels
from training.shape_code import read_shape, shape_code_channels, shape_code_target
from training.shapes_world import DEFAULT_NUM_FRAMES, SHAPES, ClipSpec, render_clip, render_coverage, sample_spec

log = logging.getLogger(__name__)
WAKE_CLIPS_SEED = 77  # the clips whose latent statistics wake and then standardise channels


@dataclass
class VAETrainConfig:
    steps: int = 1200
    batch_size: int = 4
    crop_frames: int = 9  # 4k+1: two latent frames after the causal first one
    crop_size: int = 64
    image_fraction: float = 0.2  # steps trained on single frames (what i2v encodes for frame 0)
    image_batch_size: int = 8
    init: str = "block_mean"  # "block_mean" (training/vae_init.py), "random", or a VAE .safetensors to continue from
    block_mean_logvar: float = -6.0  # posterior log-variance of the block-mean init (lower: a sharper, fixed latent)
    train: str = "all"  # "all", or "decoder": the encoder and so the latent space an MMDiT was trained on stay fixed
    # (with init "block_mean" the latents stay the colour block means of the init)
    lr: float = 3e-4
    min_lr_fraction: float = 0.05
    warmup_steps: int = 50
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    kl_weight: float = 1e-6  # on the KL summed over latents / pixel count (the SD/LDM convention)
    l1_weight: float = 0.0  # loss = l1_weight * L1 + mse_weight * MSE + kl_weight * KL
    mse_weight: float = 1.0
    wake_channels: float = 0.0  # > 0: lift quiet latent channels of --init FILE to this std first (vae_init.wake_latent_channels)
    keep_scale: bool = False  # keep the preset's scale_factor: an MMDiT trained on the old latents keeps its input scale
    edge_weight: float = 0.0  # extra weight of pixels near the target's edges (corners, tips: what MSE neglects)
    anchor_weight: float = 0.0  # > 0: keep the posterior mean near --init FILE's, so an MMDiT trained on it adapts fast
    encoder_lr_scale: float = 1.0  # encoder-side learning rate / the decoder's (woken channels amplify encoder steps)
    shape_code_weight: float = 0.0  # > 0: the last 3 latent channels learn the object's shape (training/shape_code.py)
    code_blur: float = 0.0  # share of clips decoded with the other channels blurred, so the outline must come from the code
    code_blur_cells: int = 3  # side of that blur's window in latent cells (odd)
    code_blur_noise: float = 0.0  # std of noise added to the blurred channels, in the MMDiT's units (its rough samples)
    # a file of `python -m training generate-latents`: every other step decodes the MMDiT's own
    # latents of rendered clips (training/generated_latents.py) instead of the encoder's
    generated_latents: str = ""
    seed: int = 0
    checkpoint_every: int = 100
    log_every: int = 10
    eval_clips: int = 8  # full 128x128 clips for PSNR and the latent std
    eval_frames: int = DEFAULT_NUM_FRAMES
    threads: int = 2
    device: str = "auto"  # cpu, cuda, or auto: cuda when there is one
    data_workers: int = 0  # processes rendering batches ahead of the step (0: the training loop renders them)


# --------------------------------------------------------------------------- data


def to_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 (T,H,W,3) -> float (3,T,H,W) in [-1,1]."""
    return torch.from_numpy(frames).permute(3, 0, 1, 2).float() / 127.5 - 1.0


@dataclass
class VAEBatch:
    video: torch.Tensor  # (B, 3, T, S, S) in [-1, 1]
    coverage: torch.Tensor  # (B, T, S, S): the share of each pixel the object covers
    shapes: list[str]

    def to(self, device: torch.device) -> "VAEBatch":
        return VAEBatch(self.video.to(device), self.coverage.to(device), self.shapes)


@dataclass
class PairBatch:
    latent: torch.Tensor  # (B, C, t, h, w) crops of generated latents, unscaled
    video: torch.Tensor  # (B, 3, T, S, S) the rendered clips' matching pixel crops

    def to(self, device: torch.device) -> "PairBatch":
        return PairBatch(self.latent.to(device), self.video.to(device))


class RenderedBatches(torch.utils.data.Dataset):
    """Step index -> its batch, so DataLoader workers can render the next steps' clips while the
    GPU trains; the batches are the same as without workers. With generated latents, even steps
    are `PairBatch`es."""

    def __init__(self, cfg: VAETrainConfig, vae_config: VAEConfig | None = None, pairs: list | None = None):
        self.cfg, self.vae_config, self.pairs = cfg, vae_config, pairs

    def __len__(self) -> int:
        return self.cfg.steps

    def __getitem__(self, step: int) -> VAEBatch | PairBatch:
        if self.pairs and step % 2 == 0:
            return sample_pair_batch(self.cfg, self.vae_config, self.pairs, step)
        return sample_batch(self.cfg, step)


def batches_from(cfg: VAETrainConfig, start: int, vae_config: VAEConfig | None = None,
                 pairs: list | None = None) -> Iterator[VAEBatch | PairBatch]:
    """The batches of steps start .. cfg.steps - 1, in order."""
    workers = cfg.data_workers
    loader = torch.utils.data.DataLoader(
        RenderedBatches(cfg, vae_config, pairs), batch_size=None, sampler=range(start, cfg.steps),
        num_workers=workers, prefetch_factor=4 if workers else None, persistent_workers=False)
    return iter(loader)


def sample_pair_batch(cfg: VAETrainConfig, vae_config: VAEConfig, pairs: list, step: int) -> PairBatch:
    """`batch_size` generated latents, each cropped to the latent frames that decode to the first
    `crop_frames` frames and to `crop_size` pixels, with the rendered clip's matching pixels."""
    rng = np.random.default_rng([cfg.seed, step, 1])
    s = vae_config.spatial_compression
    cells = cfg.crop_size // s
    latent_frames = (cfg.crop_frames - 1) // vae_config.time_compression + 1
    latents, videos = [], []
    for _ in range(cfg.batch_size):
        pair = pairs[int(rng.integers(len(pairs)))]
        z = pair.latent
        y0, x0 = int(rng.integers(z.shape[2] - cells + 1)), int(rng.integers(z.shape[3] - cells + 1))
        latents.append(z[:, :latent_frames, y0:y0 + cells, x0:x0 + cells])
        clip = render_clip(pair.spec)[: cfg.crop_frames, y0 * s:(y0 + cells) * s, x0 * s:(x0 + cells) * s]
        videos.append(to_tensor(clip))
    return PairBatch(torch.stack(latents), torch.stack(videos))


def sample_batch(cfg: VAETrainConfig, step: int) -> VAEBatch:
    """Random crops of freshly rendered training clips (held-out combos never appear)."""
    rng = np.random.default_rng([cfg.seed, step])
    images = rng.random() < cfg.image_fraction
    batch, frames = (cfg.image_batch_size, 1) if images else (cfg.batch_size, cfg.crop_frames)
    crops, coverages, shapes = [], [], []
    for _ in range(batch):
        # Render full-length clips so motion speeds match the real data, then crop a window.
        spec = sample_spec(rng, held_out=False, num_frames=DEFAULT_NUM_FRAMES)
        clip = render_clip(spec)
        t0 = int(rng.integers(clip.shape[0] - frames + 1))
        y0 = int(rng.integers(clip.shape[1] - cfg.crop_size + 1))
        x0 = int(rng.integers(clip.shape[2] - cfg.crop_size + 1))
        window = (slice(t0, t0 + frames), slice(y0, y0 + cfg.crop_size), slice(x0, x0 + cfg.crop_size))
        crops.append(to_tensor(clip[window]))
        coverages.append(torch.from_numpy(render_coverage(spec)[window]))
        shapes.append(spec.shape)
    return VAEBatch(torch.stack(crops), torch.stack(coverages), shapes)


def eval_specs(num: int, seed: int, held_out: bool, num_frames: int = DEFAULT_NUM_FRAMES) -> list[ClipSpec]:
    """Full demo-size (128x128) clips, fixed by `seed`."""
    rng = np.random.default_rng(seed)
    return [sample_spec(rng, held_out=held_out, num_frames=num_frames, aspect_ratio="1:1") for _ in range(num)]


def eval_clips(num: int, seed: int, held_out: bool, num_frames: int = DEFAULT_NUM_FRAMES) -> torch.Tensor:
    """(N,3,T,128,128) the clips of `eval_specs`."""
    return torch.stack([to_tensor(render_clip(spec)) for spec in eval_specs(num, seed, held_out, num_frames)])


# --------------------------------------------------------------------------- model


def vae_device(vae: HunyuanVAE) -> torch.device:
    return next(vae.model.parameters()).device


def resolve_device(name: str) -> torch.device:
    if name not in ("auto", "cpu", "cuda"):
        raise UserError(f"device is {name!r}; allowed: 'auto', 'cpu', 'cuda'")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device is 'cuda' but torch sees no GPU; use 'cpu' or 'auto'")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def initial_vae(vae_config: VAEConfig, init: str, block_mean_logvar: float = -6.0) -> HunyuanVAE:
    """The VAE before the first step: block-mean, random, or loaded from a .safetensors file."""
    vae = HunyuanVAE(vae_config)
    if init == "block_mean":
        init_block_mean_vae(vae.model, logvar=block_mean_logvar)
    elif init.endswith(".safetensors"):
        expected = {k: tuple(v.shape) for k, v in vae.model.state_dict().items()}
        vae.model.load_state_dict(load_checked(Path(init), expected, "HunyuanVideo VAE"))
    elif init != "random":
        raise UserError(f"init is {init!r}; allowed: 'block_mean', 'random' or a VAE .safetensors file")
    return vae


def parameter_groups(vae: HunyuanVAE, cfg: VAETrainConfig) -> list[dict]:
    """AdamW groups: the decoder side (post_quant_conv + decoder) and, unless only the decoder
    trains, the encoder side at `encoder_lr_scale` times the learning rate."""
    model = vae.model
    decoder_side = [*model.post_quant_conv.parameters(), *model.decoder.parameters()]
    encoder_side = [*model.encoder.parameters(), *model.quant_conv.parameters()]
    if cfg.train == "decoder":
        for module in (model.encoder, model.quant_conv):
            module.requires_grad_(False)
        return [{"params": decoder_side, "lr_scale": 1.0}]
    return [{"params": encoder_side, "lr_scale": cfg.encoder_lr_scale}, {"params": decoder_side, "lr_scale": 1.0}]


# --------------------------------------------------------------------------- loss, schedule


def vae_loss(vae: HunyuanVAE, batch: VAEBatch, cfg: VAETrainConfig, generator: torch.Generator,
             anchor: HunyuanVAE | None = None):
    video = batch.video
    with torch.set_grad_enabled(cfg.train == "all"):
        mean, logvar = vae.moments(video)
    # Noise from the CPU generator on every device: a run's batches and noise do not depend on it.
    z = mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=generator).to(mean.device)
    if cfg.code_blur > 0:
        noise_std = cfg.code_blur_noise / vae.config.scale_factor
        z = blur_uncoded_channels(z, cfg.code_blur, generator, cfg.code_blur_cells, noise_std)
    recon = vae.model.decode(z).sample
    l1, mse = reconstruction_errors(recon, video, cfg)
    kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).sum() / video.numel()
    loss = cfg.l1_weight * l1 + cfg.mse_weight * mse + cfg.kl_weight * kl
    # Both in the MMDiT's units (latents times scale_factor, unit variance): 0.01 = 1% of their variance.
    scaled = mean * vae.config.scale_factor
    code_error = torch.zeros((), device=loss.device)
    anchored = slice(None)
    if cfg.shape_code_weight > 0:
        config = vae.config
        code = shape_code_channels(config.latent_channels)
        target = shape_code_target(batch.coverage, batch.shapes, config.time_compression, config.spatial_compression)
        code_error = (scaled[:, code] - target).pow(2).mean()
        loss = loss + cfg.shape_code_weight * code_error
        anchored = slice(0, code.start)  # the code channels are meant to move away from the old latents
    drift = torch.zeros((), device=loss.device)
    if anchor is not None:
        with torch.no_grad():
            anchor_mean, _ = anchor.moments(video)
        drift = (scaled[:, anchored] - anchor_mean[:, anchored] * vae.config.scale_factor).pow(2).mean()
        loss = loss + cfg.anchor_weight * drift
    parts = {"l1": l1.item(), "mse": mse.item(), "kl": kl.item(), "drift": drift.item(), "code": code_error.item()}
    return loss, parts


def reconstruction_errors(recon: torch.Tensor, video: torch.Tensor, cfg: VAETrainConfig):
    """Edge-weighted L1 and MSE of a decoded batch against its target pixels."""
    weight = edge_weights(video, cfg.edge_weight)
    return ((recon - video).abs() * weight).mean(), ((recon - video).pow(2) * weight).mean()


def pair_loss(vae: HunyuanVAE, batch: PairBatch, cfg: VAETrainConfig):
    """The reconstruction terms of `vae_loss` for generated latents against their rendered clips."""
    l1, mse = reconstruction_errors(vae.model.decode(batch.latent).sample, batch.video, cfg)
    loss = cfg.l1_weight * l1 + cfg.mse_weight * mse
    return loss, {"l1": l1.item(), "mse": mse.item(), "kl": 0.0, "drift": 0.0, "code": 0.0}


def blur_uncoded_channels(z: torch.Tensor, share: float, generator: torch.Generator, cells: int = 3,
                          noise_std: float = 0.0) -> torch.Tensor:
    """Blur the non-code channels of a random `share` of the clips over `cells` x `cells` latent
    cells, and add noise of `noise_std` (in z's units) to them.

    The demo MMDiT draws blobs: round, soft-edged objects whatever the caption says. Decoding
    such latents teaches the decoder to take the outline from the shape code, not from details
    of the other channels that an MMDiT does not get right.
    """
    code = shape_code_channels(z.shape[1])
    chosen = torch.rand(z.shape[0], generator=generator) < share
    if not chosen.any():
        return z
    chosen = chosen.to(z.device)
    other = z[:, : code.start]
    # Frame by frame, the mean over the cells of the window that lie inside the latent
    # (avg_pool3d refuses latents narrower than the window; avg_pool2d pads first).
    blurred = F.avg_pool2d(other.flatten(1, 2), cells, stride=1, padding=cells // 2,
                           count_include_pad=False).view_as(other)
    if noise_std > 0:
        blurred = blurred + noise_std * torch.randn(blurred.shape, generator=generator).to(z.device)
    mixed = torch.where(chosen[:, None, None, None, None], blurred, other)
    return torch.cat([mixed, z[:, code]], dim=1)


def edge_weights(video: torch.Tensor, edge_weight: float) -> torch.Tensor:
    """Per-pixel loss weights, mean 1: 1 + edge_weight within 2 px of an edge of the target.

    An object's outline is a few percent of the pixels, so plain MSE rounds corners and blunts
    triangle tips for almost no loss; this makes the outline count.
    """
    if edge_weight == 0:
        return torch.ones((), dtype=video.dtype, device=video.device)
    frames = video.transpose(1, 2).flatten(0, 1)  # (B*T, 3, H, W)
    dy = (frames[:, :, 1:] - frames[:, :, :-1]).abs().amax(dim=1, keepdim=True)
    dx = (frames[:, :, :, 1:] - frames[:, :, :, :-1]).abs().amax(dim=1, keepdim=True)
    edges = torch.zeros_like(frames[:, :1])
    edges[:, :, 1:] = torch.maximum(edges[:, :, 1:], dy)
    edges[:, :, :, 1:] = torch.maximum(edges[:, :, :, 1:], dx)
    band = F.max_pool2d((edges > 0.1).to(video.dtype), kernel_size=5, stride=1, padding=2)
    weight = 1.0 + edge_weight * band
    weight = weight / weight.mean()
    b, t = video.shape[0], video.shape[2]
    return weight.unflatten(0, (b, t)).transpose(1, 2)  # (B, 1, T, H, W)


def learning_rate(cfg: VAETrainConfig, step: int) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(cfg.steps - cfg.warmup_steps, 1)
    floor = cfg.lr * cfg.min_lr_fraction
    return floor + (cfg.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


# --------------------------------------------------------------------------- checkpoints


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    state = optimizer.state_dict()["state"]
    return {f"{index}.{name}": value.detach().cpu().clone() for index, slots in state.items() for name, value in slots.items()}


def load_optimizer_tensors(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    full = optimizer.state_dict()
    full["state"] = state
    optimizer.load_state_dict(full)


# --------------------------------------------------------------------------- evaluation


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB for tensors in [-1,1] (peak-to-peak 2)."""
    mse = F.mse_loss(a.clamp(-1, 1), b.clamp(-1, 1)).item()
    return 10 * math.log10(4.0 / max(mse, 1e-12))


@torch.no_grad()
def evaluate(vae: HunyuanVAE, clips: torch.Tensor) -> dict[str, float]:
    """Posterior-mean encode -> decode per clip; PSNR on frame 0 and on all frames, latent stats."""
    vae.eval()
    first, full, latents = [], [], []
    for clip in clips:
        clip = clip.to(vae_device(vae))
        mean, _ = vae.moments(clip[None])
        recon = vae.model.decode(mean).sample
        first.append(psnr(recon[:, :, 0], clip[None, :, 0]))
        full.append(psnr(recon, clip[None]))
        latents.append(mean.flatten())
    z = torch.cat(latents)
    return {
        "psnr_frame0": float(np.mean(first)),
        "psnr_all": float(np.mean(full)),
        "psnr_frame0_min": float(np.min(first)),
        "latent_mean": z.mean().item(),
        "latent_std": z.std().item(),
    }


@torch.no_grad()
def shape_code_accuracy(vae: HunyuanVAE, specs: list[ClipSpec]) -> float:
    """Share of the clips whose encoded shape code (`read_shape`) names the rendered shape."""
    vae.eval()
    right = 0
    for spec in specs:
        mean, _ = vae.moments(to_tensor(render_clip(spec))[None].to(vae_device(vae)))
        right += read_shape(mean * vae.config.scale_factor, vae.config.latent_channels)[0] == spec.shape
    return right / len(specs)


def write_scale_factor(toml_path: Path, scale: float) -> None:
    """Rewrite the one `scale_factor = ...` line of the [vae] table, keeping its comment."""
    lines = toml_path.read_text(encoding="utf-8").splitlines(keepends=True)
    table, changed = None, 0
    for i, line in enumerate(lines):
        header = re.match(r"^\s*\[([^\]]+)\]\s*(#.*)?$", line)
        if header:
            table = header.group(1).strip()
        elif table == "vae" and re.match(r"^\s*scale_factor\s*=", line):
            lines[i] = re.sub(r"(=\s*)[-+0-9.eE]+", lambda m: f"{m.group(1)}{scale:.6f}", line, count=1)
            changed += 1
    if changed != 1:
        raise UserError(f"{toml_path} has no `scale_factor = ...` line in its [vae] table")
    toml_path.write_text("".join(lines), encoding="utf-8")


# --------------------------------------------------------------------------- loop


def train_vae(vae_config: VAEConfig, cfg: VAETrainConfig, out_path: Path, work_dir: Path, resume: bool) -> dict:
    """Train, save `out_path` (weights + scale_factor metadata), return the summary dict."""
    torch.set_num_threads(cfg.threads)
    work_dir = Path(work_dir)
    ckpt_root = work_dir / "checkpoints"
    torch.manual_seed(cfg.seed)
    if cfg.train not in ("all", "decoder"):
        raise UserError(f"train is {cfg.train!r}; allowed: 'all', 'decoder'")
    if not 0.0 <= cfg.image_fraction <= 1.0:
        raise UserError(f"image_fraction is {cfg.image_fraction}; allowed: 0.0 to 1.0")
    if cfg.wake_channels < 0:
        raise UserError(f"wake_channels is {cfg.wake_channels}; allowed: 0 (off) or more")
    if cfg.edge_weight < 0:
        raise UserError(f"edge_weight is {cfg.edge_weight}; allowed: 0 or more")
    if not 0.0 < cfg.encoder_lr_scale <= 1.0:
        raise UserError(f"encoder_lr_scale is {cfg.encoder_lr_scale}; allowed: above 0 up to 1.0")
    if not 0.0 <= cfg.shape_code_weight <= 1000.0:
        raise UserError(f"shape_code_weight is {cfg.shape_code_weight}; allowed: 0 (off) to 1000")
    if not 0.0 <= cfg.code_blur <= 1.0:
        raise UserError(f"code_blur is {cfg.code_blur}; allowed: 0.0 to 1.0")
    if cfg.code_blur_cells not in range(1, 16, 2):
        raise UserError(f"code_blur_cells is {cfg.code_blur_cells}; allowed: an odd number from 1 to 15")
    if not 0.0 <= cfg.code_blur_noise <= 10.0:
        raise UserError(f"code_blur_noise is {cfg.code_blur_noise}; allowed: 0.0 to 10.0")
    if not 0 <= cfg.data_workers <= 64:
        raise UserError(f"data_workers is {cfg.data_workers}; allowed: 0 to 64")
    device = resolve_device(cfg.device)
    pairs = None
    if cfg.generated_latents:
        if cfg.train != "decoder":
            raise UserError("generated_latents trains the decoder on the MMDiT's latents of a fixed encoder: it needs train 'decoder'")
        if cfg.crop_size % vae_config.spatial_compression or (cfg.crop_frames - 1) % vae_config.time_compression:
            raise UserError(f"crop_size {cfg.crop_size} and crop_frames {cfg.crop_frames} must fit whole latent cells "
                            f"for generated latents: multiples of {vae_config.spatial_compression} pixels and "
                            f"{vae_config.time_compression}k+1 frames")
        from training.generated_latents import load_pairs  # that module imports this one

        pairs = load_pairs(cfg.generated_latents)
    # code_blur alone suits a decoder-only run on a VAE whose encoder already writes the code.
    if (cfg.shape_code_weight > 0 or cfg.code_blur > 0) and vae_config.latent_channels <= len(SHAPES):
        raise UserError(f"the shape code needs more than {len(SHAPES)} latent channels (it takes the last "
                        f"{len(SHAPES)}); the preset has {vae_config.latent_channels}")
    if cfg.shape_code_weight > 0 and cfg.train != "all":
        raise UserError("shape_code_weight teaches the encoder to write the shape: it needs train 'all'")
    if cfg.anchor_weight < 0:
        raise UserError(f"anchor_weight is {cfg.anchor_weight}; allowed: 0 (off) or more")
    if cfg.anchor_weight > 0 and (cfg.train != "all" or not cfg.init.endswith(".safetensors")):
        raise UserError("anchor_weight keeps the latents near those of trained weights: it needs init FILE and train 'all'")
    if not -20.0 <= cfg.block_mean_logvar <= 0.0:
        raise UserError(f"block_mean_logvar is {cfg.block_mean_logvar}; allowed: -20.0 to 0.0")
    vae = initial_vae(vae_config, cfg.init, cfg.block_mean_logvar)
    if cfg.train == "decoder" and cfg.init == "random":
        raise UserError("train 'decoder' keeps the encoder as it starts: init must be 'block_mean' or a VAE .safetensors file")
    vae.model.to(device)
    vae.set_tiling(False)  # crops and 128px eval clips fit whole; tiling only costs time here
    woken = {}
    if cfg.wake_channels > 0:
        if cfg.train != "all" or not cfg.init.endswith(".safetensors"):
            raise UserError("wake_channels rescales the latents of trained weights: it needs init FILE and train 'all'")
        woken = wake_latent_channels(vae, eval_clips(4, WAKE_CLIPS_SEED, held_out=False).to(device), cfg.wake_channels)
        log.info("woke latent channels %s", {c: round(f, 1) for c, f in woken.items()})
    anchor = None
    if cfg.anchor_weight > 0:  # a frozen copy of the starting weights: its latents are the anchor
        anchor = copy.deepcopy(vae).eval().requires_grad_(False)
    groups = parameter_groups(vae, cfg)
    trained = [p for group in groups for p in group["params"]]
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.99))

    start = 0
    if resume:
        remove_incomplete(ckpt_root)
        found = latest_checkpoint(ckpt_root)
        if found is not None:
            data = read_checkpoint(found)
            vae.model.load_state_dict(data.tensors["model"])
            load_optimizer_tensors(optimizer, data.tensors["optimizer"])
            start = data.step
            log.info("resumed from %s (step %d)", found, start)
    saver = CheckpointSaver(ckpt_root, keep_last=2, async_save=False)

    def checkpoint(step: int) -> None:
        state = {k: v.detach().cpu().clone() for k, v in vae.model.state_dict().items()}
        saver.save(CheckpointData(step=step, tensors={"model": state, "optimizer": optimizer_tensors(optimizer)},
                                  json={"config": asdict(cfg)}))

    vae.train()
    started = time.perf_counter()
    batches = batches_from(cfg, start, vae_config, pairs)
    for step in range(start, cfg.steps):
        lr = learning_rate(cfg, step)
        for group in optimizer.param_groups:
            group["lr"] = lr * group["lr_scale"]
        batch = next(batches).to(device)
        generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        if isinstance(batch, PairBatch):
            loss, parts = pair_loss(vae, batch, cfg)
        else:
            loss, parts = vae_loss(vae, batch, cfg, generator, anchor)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(trained, cfg.grad_clip) if cfg.grad_clip > 0 else torch.tensor(0.0)
        optimizer.step()
        done = step + 1
        if done % cfg.log_every == 0 or done == cfg.steps:
            elapsed = time.perf_counter() - started
            log.info("step %d/%d loss %.4f l1 %.4f mse %.5f kl %.2f drift %.4f code %.4f gnorm %.2f lr %.2e T=%d %.2fs/step",
                     done, cfg.steps, loss.item(), parts["l1"], parts["mse"], parts["kl"], parts["drift"], parts["code"],
                     grad_norm.item(), lr, batch.video.shape[2], elapsed / (done - start))
        if done % cfg.checkpoint_every == 0 and done < cfg.steps:
            checkpoint(done)
    train_seconds = time.perf_counter() - started
    if cfg.steps > start:
        checkpoint(cfg.steps)
    if woken:  # after the checkpoint, so that resuming a finished run standardises the same weights
        clips = torch.cat([eval_clips(4, WAKE_CLIPS_SEED, held_out=False), eval_clips(4, WAKE_CLIPS_SEED + 1, held_out=True)]).to(device)
        moved = standardize_latent_channels(vae, clips, sorted(woken))
        log.info("standardised latent channels %s", {c: (round(s, 2), round(f, 3)) for c, (s, f) in moved.items()})

    # Scale so that diffusion latents have unit variance; PSNR on full-size unseen clips.
    seen = evaluate(vae, eval_clips(cfg.eval_clips, cfg.seed + 10_000, held_out=False, num_frames=cfg.eval_frames))
    held = evaluate(vae, eval_clips(cfg.eval_clips, cfg.seed + 20_000, held_out=True, num_frames=cfg.eval_frames))
    latent_std = (seen["latent_std"] + held["latent_std"]) / 2
    # A fixed trained encoder keeps the scale the weights came with, bit for bit.
    trained_encoder = cfg.train == "decoder" and cfg.init.endswith(".safetensors")
    scale = vae_config.scale_factor if trained_encoder or cfg.keep_scale else 1.0 / latent_std
    metadata = {"format": "pt", "scale_factor": f"{scale:.6f}", "shift_factor": "0.0",
                "trained_steps": str(cfg.steps), "psnr_frame0": f"{seen['psnr_frame0']:.2f}",
                "psnr_all": f"{seen['psnr_all']:.2f}"}
    save_safetensors_atomic({k: v.cpu() for k, v in vae.model.state_dict().items()}, out_path, metadata)
    summary = {"steps": cfg.steps, "resumed_from": start, "train_seconds_this_run": round(train_seconds, 1),
               "scale_factor": scale, "eval_train_combos": seen, "eval_held_out_combos": held,
               "config": asdict(cfg), "out": str(out_path)}
    if cfg.shape_code_weight > 0:
        summary["shape_code_read_right"] = {
            "train_combos": shape_code_accuracy(vae, eval_specs(cfg.eval_clips, cfg.seed + 10_000, False, cfg.eval_frames)),
            "held_out_combos": shape_code_accuracy(vae, eval_specs(cfg.eval_clips, cfg.seed + 20_000, True, cfg.eval_frames)),
        }
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / "summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    return summary
