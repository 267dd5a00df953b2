"""Train the demo preset's HunyuanVideo VAE on shapes-world clips rendered on the fly.

nanoGPT-style: one loop, one batch per step (training/demo/vae_batches.py), the loss of
training/demo/vae_loss.py, AdamW with diffusers' warmup + decay schedule. WORK_DIR gets what the
finetune trainer writes for the UI: metrics.jsonl, status.json, train.log, checkpoints/ (weights,
optimizer and scheduler state; a resumed run sees the same batches as an uninterrupted one),
then summary.json with PSNR on full-size clips and the scale factor.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from opensora.checkpoints import load_checked
from opensora.configs import VAEConfig
from opensora.devices import check_device
from opensora.io.atomic import save_safetensors_atomic
from opensora.models.hunyuan_vae import HunyuanVAE
from training.checkpointing import CheckpointData, CheckpointSaver, latest_checkpoint, read_checkpoint, remove_incomplete
from training.config import SCHEDULER_NAMES
from training.demo.clips import eval_clips, eval_specs, to_tensor
from training.demo.latent_pairs import load_pairs
from training.demo.preset_copies import set_toml_values
from training.demo.shape_code import read_shape
from training.demo.shapes_world import ClipSpec, render_clip
from training.demo.vae_batches import PairBatch, batches_from
from training.demo.vae_config import VAETrainConfig
from training.demo.vae_init import init_block_mean_vae
from training.demo.vae_loss import pair_loss, vae_loss
from training.metrics import MetricsLog
from training.run_status import attach_log_file, detach_log_file, write_status

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- model


def vae_device(vae: HunyuanVAE) -> torch.device:
    return next(vae.model.parameters()).device


def resolve_device(name: str) -> torch.device:
    """auto (the GPU when there is one), cpu or cuda, checked as the generate command checks it."""
    return torch.device(check_device(None if name == "auto" else name)[0])


def initial_vae(vae_config: VAEConfig, init: str) -> HunyuanVAE:
    """The VAE before the first step: block-mean, random, or loaded from a .safetensors file (or shard index)."""
    vae = HunyuanVAE(vae_config)
    if init == "block_mean":
        init_block_mean_vae(vae.model)
    elif init != "random":
        expected = {k: tuple(v.shape) for k, v in vae.model.state_dict().items()}
        vae.model.load_state_dict(load_checked(Path(init), expected, "HunyuanVideo VAE"))
    return vae


def trainable_parameters(vae: HunyuanVAE, cfg: VAETrainConfig) -> list[torch.nn.Parameter]:
    """Everything, or with train 'decoder' only post_quant_conv + decoder (the encoder is frozen)."""
    model = vae.model
    if cfg.train == "decoder":
        for module in (model.encoder, model.quant_conv):
            module.requires_grad_(False)
        return [*model.post_quant_conv.parameters(), *model.decoder.parameters()]
    return list(model.parameters())


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
    """Rewrite the one `scale_factor = ...` line of the preset's [vae] table, keeping its comment."""
    text = toml_path.read_text(encoding="utf-8")
    toml_path.write_text(set_toml_values(text, "vae", {"scale_factor": float(f"{scale:.6f}")}, str(toml_path)),
                         encoding="utf-8")


# --------------------------------------------------------------------------- loop


def train_vae(vae_config: VAEConfig, cfg: VAETrainConfig, out_path: Path, work_dir: Path, resume: bool) -> dict:
    """Train, save `out_path` (weights + scale_factor metadata), return the summary dict."""
    cfg.validate(vae_config)
    device = resolve_device(cfg.device)
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    handler = attach_log_file(work_dir)
    try:
        summary = _train(vae_config, cfg, Path(out_path), work_dir, resume, device)
    except BaseException as err:
        write_status(work_dir, "failed", 0, cfg.steps, f"{type(err).__name__}: {err}")
        raise
    finally:
        detach_log_file(handler)
    return summary


def _train(vae_config: VAEConfig, cfg: VAETrainConfig, out_path: Path, work_dir: Path, resume: bool,
           device: torch.device) -> dict:
    from diffusers.optimization import get_scheduler  # imported here: pulls in diffusers' training utils

    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    ckpt_root = work_dir / "checkpoints"
    write_status(work_dir, "running", 0, cfg.steps, "setting up")
    pairs = load_pairs(cfg.generated_latents) if cfg.generated_latents else None
    vae = initial_vae(vae_config, cfg.init)
    vae.model.to(device)
    vae.set_tiling(False)  # crops and 128px eval clips fit whole; tiling only costs time here
    trained = trainable_parameters(vae, cfg)
    optimizer = torch.optim.AdamW(trained, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.99))
    scheduler = get_scheduler(SCHEDULER_NAMES[cfg.schedule], optimizer, num_warmup_steps=cfg.warmup(),
                              num_training_steps=cfg.steps)

    start = 0
    if resume:
        remove_incomplete(ckpt_root)
        found = latest_checkpoint(ckpt_root)
        if found is not None:
            data = read_checkpoint(found)
            vae.model.load_state_dict(data.tensors["model"])
            load_optimizer_tensors(optimizer, data.tensors["optimizer"])
            scheduler.load_state_dict(data.json["scheduler"])
            for group, lr in zip(optimizer.param_groups, scheduler.get_last_lr()):
                group["lr"] = lr  # the scheduler sets it only at its next step
            start = data.step
            log.info("resumed from %s (step %d)", found, start)
    metrics = MetricsLog(work_dir, start or None, tensorboard=False)
    saver = CheckpointSaver(ckpt_root, keep_last=2, async_save=False)

    def checkpoint(step: int) -> None:
        state = {k: v.detach().cpu().clone() for k, v in vae.model.state_dict().items()}
        saver.save(CheckpointData(step=step, tensors={"model": state, "optimizer": optimizer_tensors(optimizer)},
                                  json={"config": cfg.to_dict(), "scheduler": scheduler.state_dict()}))

    vae.train()
    started = time.perf_counter()
    batches = batches_from(cfg, start, vae_config, pairs)
    for step in range(start, cfg.steps):
        lr = scheduler.get_last_lr()[0]  # the rate this step uses
        batch = next(batches).to(device)
        if isinstance(batch, PairBatch):
            loss, parts = pair_loss(vae, batch, cfg)
        else:
            loss, parts = vae_loss(vae, batch, cfg, torch.Generator().manual_seed(cfg.seed * 1_000_003 + step))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(trained, cfg.grad_clip) if cfg.grad_clip > 0 else torch.tensor(0.0)
        optimizer.step()
        scheduler.step()
        done = step + 1
        if done % cfg.log_every == 0 or done == cfg.steps:
            elapsed = time.perf_counter() - started
            record = {"step": done, "loss": loss.item(), **parts, "grad_norm": grad_norm.item(), "lr": lr,
                      "frames": batch.video.shape[2], "s_per_step": elapsed / (done - start), "elapsed_s": elapsed}
            metrics.log_step(record)
            write_status(work_dir, "running", done, cfg.steps, f"step {done}/{cfg.steps}, loss {loss.item():.4f}")
            log.info("step %d/%d loss %.4f l1 %.4f mse %.5f kl %.2f code %.4f gnorm %.2f lr %.2e T=%d %.2fs/step",
                     done, cfg.steps, loss.item(), parts["l1"], parts["mse"], parts["kl"], parts["code"],
                     grad_norm.item(), lr, record["frames"], record["s_per_step"])
        if done % cfg.checkpoint_every == 0 and done < cfg.steps:
            checkpoint(done)
    metrics.close()
    train_seconds = time.perf_counter() - started
    if cfg.steps > start:
        checkpoint(cfg.steps)

    # Scale so that diffusion latents have unit variance; PSNR on full-size unseen clips.
    write_status(work_dir, "running", cfg.steps, cfg.steps, "evaluating")
    seen = evaluate(vae, eval_clips(cfg.eval_clips, cfg.seed + 10_000, held_out=False, num_frames=cfg.eval_frames))
    held = evaluate(vae, eval_clips(cfg.eval_clips, cfg.seed + 20_000, held_out=True, num_frames=cfg.eval_frames))
    latent_std = (seen["latent_std"] + held["latent_std"]) / 2
    # A fixed trained encoder keeps the scale the weights came with, bit for bit.
    trained_encoder = cfg.train == "decoder" and cfg.init_is_file()
    scale = vae_config.scale_factor if trained_encoder or cfg.keep_scale else 1.0 / latent_std
    metadata = {"format": "pt", "scale_factor": f"{scale:.6f}", "shift_factor": "0.0",
                "trained_steps": str(cfg.steps), "psnr_frame0": f"{seen['psnr_frame0']:.2f}",
                "psnr_all": f"{seen['psnr_all']:.2f}"}
    save_safetensors_atomic({k: v.cpu() for k, v in vae.model.state_dict().items()}, out_path, metadata)
    summary = {"steps": cfg.steps, "resumed_from": start, "train_seconds_this_run": round(train_seconds, 1),
               "scale_factor": scale, "eval_train_combos": seen, "eval_held_out_combos": held,
               "config": cfg.to_dict(), "out": str(out_path)}
    if cfg.shape_code_weight > 0:
        summary["shape_code_read_right"] = {
            "train_combos": shape_code_accuracy(vae, eval_specs(cfg.eval_clips, cfg.seed + 10_000, False, cfg.eval_frames)),
            "held_out_combos": shape_code_accuracy(vae, eval_specs(cfg.eval_clips, cfg.seed + 20_000, True, cfg.eval_frames)),
        }
    (work_dir / "summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    write_status(work_dir, "finished", cfg.steps, cfg.steps, f"wrote {out_path}")
    return summary
