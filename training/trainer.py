"""The training loop: rectified-flow fine-tuning of the MMDiT (LoRA or full), resumable.

Set-up first (accelerate, models, data, optimizer, maybe a checkpoint), then a loop that reads
like nanoGPT's:

    batch -> clean latent x0 (VAE posterior sample) -> caption dropout + random cond type
          -> x_t, v target -> MMDiT -> MSE -> backward -> clip -> AdamW -> (EMA) -> log, checkpoint

Multi-GPU runs go through `accelerate launch` (DDP, or FSDP from the accelerate config): every
process trains on its own share of the bucket batches and only the main process writes files.
SIGTERM / SIGINT finish the current step, save a checkpoint and stop with status "stopped".
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, gather_object, set_seed
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from opensora.checkpoints import checkpoint_root
from opensora.devices import DTYPES as DTYPES_BY_NAME
from opensora.errors import UserError
from opensora.loading import load_components
from opensora.io.outputs import save_safetensors_atomic
from opensora.lora import pairs_from_file_tensors
from opensora.models.mmdit import mmdit_forward
from opensora.models.mmdit_convert import diffusers_to_official, official_to_diffusers
from opensora.presets import load_preset
from opensora.prompts import model_prompt
from opensora.sampling.packing import image_position_ids, pack
from training import checkpointing
from training.checkpointing import CheckpointData, CheckpointSaver
from training.conditioning import condition_from_clean_latent, draw_cond_types, fitting_cond_type
from training.config import MIXED_PRECISION, SCHEDULER_NAMES, TrainConfig, bucket_config_path, preset_bucket_table
from training.flow_matching import (
    flow_matching_loss,
    noisy_latent,
    sample_timesteps,
    shift_timesteps,
    timestep_shift,
    velocity_target,
)
from training.latent_cache import (
    VAE_ENCODER_PREFIXES,
    CachedLatentDataset,
    LatentCache,
    TextEmbeddingCache,
    collate_cached,
    fill_latent_cache,
    fingerprint,
    posterior_mean,
    sample_posterior,
    tensors_digest,
)
from training.lora import add_lora, load_lora_pairs, lora_output, pairs_from_state_dict
from training.metrics import MetricsLog
from training.run_lock import RunLock
from training.run_status import attach_log_file, detach_log_file, write_status
from training.train_state import (
    flatten_optimizer_state,
    rng_state,
    set_rng_state,
    step_seed,
    unflatten_optimizer_state,
)
from training.video_dataset import TrainingLoader, VideoTextDataset, collate_samples, make_dataloader

log = logging.getLogger(__name__)

OUTPUT_FILES = {"lora": "lora.safetensors", "full": "model.safetensors"}
WEIGHT_STEMS = {"lora": "lora", "full": "model"}  # the weights file inside a checkpoint folder
# accelerate's mixed-precision names -> the dtype the frozen parts run in (opensora's dtype names)
DTYPES = {name: DTYPES_BY_NAME["fp32" if name == "no" else name] for name in MIXED_PRECISION}
EVAL_TIMES = (0.2, 0.4, 0.6, 0.8)  # unshifted flow times the fixed eval batch is scored at
MAX_EMPTY_EPOCHS = 2  # epochs in a row without a single batch -> the data cannot train


@dataclass
class TrainResult:
    state: str  # "finished" or "stopped"
    step: int
    total_steps: int
    output: str | None  # lora.safetensors / model.safetensors (finished runs)
    first_loss: float | None  # first step this process trained
    last_loss: float | None
    eval_loss_start: float | None  # fixed batch, before any training
    eval_loss_end: float | None
    samples_per_s: float  # this process's session, set-up excluded
    seconds: float
    resumed_from: int | None


@dataclass
class EvalBatch:
    """A fixed batch scored at fixed noise and times, so eval losses of different steps compare."""

    x0: torch.Tensor
    txt: torch.Tensor
    y_vec: torch.Tensor
    noises: list[torch.Tensor]


class StopSignal:
    """SIGTERM / SIGINT set a flag the loop checks after every step; a second signal stops at once."""

    def __init__(self):
        self.requested = False
        self.name = ""
        self._previous: dict = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signals can only be caught in the main thread (e.g. the trainer run by a UI thread)
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested, self.name = True, signal.Signals(signum).name
        log.warning("%s received: stopping after this step and saving a checkpoint", self.name)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


def make_accelerator(config: TrainConfig) -> Accelerator:
    device = config.runtime.device
    accelerator = Accelerator(cpu=device == "cpu", mixed_precision=config.runtime.mixed_precision)
    if device == "cuda" and accelerator.device.type != "cuda":
        raise UserError("runtime.device is cuda but no GPU is visible; use --device cpu or auto")
    return accelerator


def train(config: TrainConfig, resume: str | None = None) -> TrainResult:
    """Run (or continue) the training described by `config`; see `Trainer`."""
    return Trainer(config, resume).run()


class Trainer:
    def __init__(self, config: TrainConfig, resume: str | None = None):
        """resume: None / "none" (fresh run), "auto" (newest complete checkpoint, else fresh) or a
        checkpoint folder."""
        self.config = config
        self.resume = resume
        self.out_dir = Path(config.output_dir)
        self.checkpoint_root = self.out_dir / "checkpoints"
        self.stop = StopSignal()
        self.step = 0
        self.resumed_from: int | None = None
        self.elapsed_before = 0.0  # seconds trained by earlier sessions of this run
        self.samples_seen = 0
        self.first_loss: float | None = None
        self.last_loss: float | None = None
        self.eval_loss_start: float | None = None
        self.eval_loss_end: float | None = None

    # ------------------------------------------------------------------ entry point

    def run(self) -> TrainResult:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        previous_threads = torch.get_num_threads()
        if self.config.runtime.threads:
            torch.set_num_threads(self.config.runtime.threads)
        self.accelerator = make_accelerator(self.config)
        self.main = self.accelerator.is_main_process
        # Before any file of the run is touched: a second trainer on this folder is refused here.
        try:
            run_lock = RunLock(self.out_dir).acquire() if self.main else None
        except UserError:
            torch.set_num_threads(previous_threads)
            raise
        log_handler = attach_log_file(self.out_dir) if self.main else None
        self.metrics: MetricsLog | None = None
        self.saver = CheckpointSaver(self.checkpoint_root, self.config.checkpoint.keep_last, self.config.checkpoint.async_save)
        self.stop.install()
        self.step = self._resume_step_hint()
        self._status("running", "setting up")
        try:
            result = self._train()
        except KeyboardInterrupt:
            self._status("stopped", "interrupted twice: stopped without saving the current step")
            raise
        except BaseException as err:
            message = str(err) if isinstance(err, UserError) else f"{type(err).__name__}: {err}"
            log.error("training failed at step %d: %s", self.step, message, exc_info=not isinstance(err, UserError))
            self._status("failed", message)
            raise
        finally:
            with contextlib.suppress(BaseException):
                self.saver.wait()
            if self.metrics is not None:
                self.metrics.close()
            self.stop.restore()
            torch.set_num_threads(previous_threads)
            if log_handler is not None:
                detach_log_file(log_handler)
            if run_lock is not None:
                run_lock.release()
        return result

    def _status(self, state: str, message: str) -> None:
        if self.main:
            write_status(self.out_dir, state, self.step, self.config.steps, message)

    # ------------------------------------------------------------------ the run

    def _train(self) -> TrainResult:
        c, acc = self.config, self.accelerator
        self.session_started = session_started = time.time()
        self.preset = load_preset(c.preset)
        if not c.buckets:  # recorded resolved in config.json and the checkpoints
            c.buckets = preset_bucket_table(self.preset.name, self.preset.sampler.resolution)
        checkpoint, state = self._find_resume()
        if state is not None:
            self._check_compatible(state, checkpoint)
        else:
            self.step = 0  # a fresh start (the hint may have named a checkpoint that does not read)
        log.info("%s training of preset %s on %s for %d steps (%s)", c.mode, self.preset.name, c.data, c.steps,
                 f"{acc.num_processes} processes, {acc.device}")
        if self.main:
            (self.out_dir / "config.json").write_text(c.to_json() + "\n", encoding="utf-8")

        # Seeds what draws from the global RNGs: the LoRA's initial A matrices and the data crops
        # (a resumed run restores the RNG states saved with its checkpoint instead).
        set_seed(c.seed)
        self._build_models()
        self.loader = self._build_loader()
        optimizer = torch.optim.AdamW(
            self.trainable, lr=c.optim.lr, betas=c.optim.betas, eps=c.optim.eps, weight_decay=c.optim.weight_decay
        )
        from diffusers.optimization import get_scheduler  # imported here: pulls in diffusers' training utils

        self.scheduler = get_scheduler(
            SCHEDULER_NAMES[c.optim.schedule], optimizer, num_warmup_steps=c.optim.warmup_steps, num_training_steps=c.steps
        )
        if state is not None:  # weights before wrapping, so every process reads the same file
            self._load_weights(state, checkpoint)
        self.model, self.optimizer = acc.prepare(self.transformer, optimizer)
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        # Names without a DDP "module." prefix, so EMA tensors load whatever the process count.
        unwrapped = acc.unwrap_model(self.model)
        self.trainable_names = [n for n, p in unwrapped.named_parameters() if p.requires_grad]
        self.ema = self._make_ema()
        if state is not None:
            self._restore_state(state)
        self.metrics = MetricsLog(self.out_dir, self.resumed_from, c.log.tensorboard, enabled=self.main)
        self.eval_batch = self._prepare_eval_batch()
        if self.resumed_from is None:
            self.eval_loss_start = self._evaluate(0)

        loop_started = time.time()
        samples_before = self.samples_seen
        self._loop()
        seconds = time.time() - loop_started

        if self.stop.requested and self.step < c.steps:
            if self.step > (self.resumed_from or 0) and self.saver.last_saved_step != self.step:
                self._save_checkpoint()
            self.saver.wait()
            state_name, output = "stopped", None
            message = f"stopped by {self.stop.name} at step {self.step}; resume with --resume auto"
        else:
            self.eval_loss_end = self._evaluate(self.step)
            if self.saver.last_saved_step != self.step and (self.resumed_from or 0) < self.step:
                self._save_checkpoint()
            output = self._write_output()
            self.saver.wait()
            state_name = "finished"
            message = f"finished {self.step} steps; wrote {output}"
        result = TrainResult(
            state=state_name, step=self.step, total_steps=c.steps, output=str(output) if output else None,
            first_loss=self.first_loss, last_loss=self.last_loss, eval_loss_start=self.eval_loss_start,
            eval_loss_end=self.eval_loss_end, samples_per_s=(self.samples_seen - samples_before) / max(seconds, 1e-9),
            seconds=round(time.time() - session_started, 3), resumed_from=self.resumed_from,
        )
        if self.main:
            (self.out_dir / "summary.json").write_text(json.dumps(dataclasses.asdict(result), indent=1) + "\n")
        log.info("%s: %s", state_name, message)
        self._status(state_name, message)
        return result

    def _loop(self) -> None:
        c, acc = self.config, self.accelerator
        batches = self._endless_batches()
        step_seconds: float | None = None  # running average, for the ETA
        window_started, window_samples = time.perf_counter(), 0
        last_step_end = time.perf_counter()
        with logging_redirect_tqdm():
            bar = tqdm(total=c.steps, initial=self.step, desc=f"{c.mode} {self.preset.name}", unit="step",
                       disable=not self.main, file=sys.stderr, dynamic_ncols=True)
            while self.step < c.steps and not self.stop.requested:
                step = self.step + 1
                loss_sum, samples = torch.zeros((), device=acc.device), 0
                for micro in range(c.optim.grad_accum):
                    batch = next(batches)
                    generator = torch.Generator().manual_seed(step_seed(c.seed, step, acc.process_index, micro))
                    last = micro == c.optim.grad_accum - 1
                    with contextlib.nullcontext() if last else acc.no_sync(self.model):
                        loss, batch_size = self._loss(batch, generator)
                        acc.backward(loss / c.optim.grad_accum)
                    loss_sum += loss.detach() / c.optim.grad_accum
                    samples += batch_size
                grad_norm = acc.clip_grad_norm_(self.trainable, c.optim.grad_clip) if c.optim.grad_clip > 0 else None
                lr = self.scheduler.get_last_lr()[0]  # the rate this step used
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
                if self.ema is not None:
                    self.ema.step(self.trainable)
                self.step = step

                loss_value = acc.reduce(loss_sum, "mean").item()
                if not math.isfinite(loss_value):
                    raise UserError(f"the loss is {loss_value} at step {step}; lower --lr (now {c.optim.lr:g}) or check the data")
                now = time.perf_counter()
                seconds, last_step_end = now - last_step_end, now
                step_seconds = seconds if step_seconds is None else 0.9 * step_seconds + 0.1 * seconds
                # Processes may hold batches of different buckets (and sizes) in one step.
                global_samples = int(acc.reduce(torch.tensor(samples, device=acc.device), "sum").item())
                self.samples_seen += global_samples
                window_samples += global_samples
                self.first_loss = loss_value if self.first_loss is None else self.first_loss
                self.last_loss = loss_value
                bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr:.2e}", refresh=False)
                bar.update(1)

                eval_loss = self._evaluate(step) if c.log.eval_every and step % c.log.eval_every == 0 else None
                if step % c.log.every == 0 or step == c.steps or self.stop.requested:
                    record = {
                        "step": step, "loss": loss_value, "lr": lr,
                        "grad_norm": None if grad_norm is None else float(grad_norm),
                        "samples_per_s": window_samples / max(now - window_started, 1e-9),
                        "eta_s": (c.steps - step) * step_seconds,
                        "elapsed_s": self._elapsed(),
                        "epoch": self.loader.state_dict()["epoch"],
                        "skipped_samples": self.loader.skipped_samples,
                    }
                    if eval_loss is not None:
                        record["eval_loss"] = eval_loss
                    self.metrics.log_step(record)
                    window_started, window_samples = time.perf_counter(), 0
                    self._status("running", f"step {step}/{c.steps}, loss {loss_value:.4f}")
                if step % c.checkpoint.every == 0:
                    self._save_checkpoint()
            bar.close()

    # ------------------------------------------------------------------ one step's loss

    def _loss(self, batch: dict, generator: torch.Generator) -> tuple[torch.Tensor, int]:
        """Flow-matching loss of one batch; every random draw comes from `generator` (CPU)."""
        c, p = self.config, self.preset.mmdit.patch_size
        device = self.accelerator.device
        captions = self._captions(batch, generator)
        x0 = self._clean_latents(batch, generator if c.loss.posterior_sample else None)
        b, _, t, h, w = x0.shape
        cond_types = [fitting_cond_type(ct, t) for ct in draw_cond_types(c.conditioning.weights(), b, generator)]
        masks, masked_ref = condition_from_clean_latent(x0, cond_types)
        alpha = timestep_shift(self.preset.sampler, (h // p) * (w // p), t)
        times = sample_timesteps(b, alpha, generator, c.loss.logit_normal_mean, c.loss.logit_normal_std).to(device)
        noise = torch.randn(x0.shape, generator=generator).to(device)
        x_t = noisy_latent(x0, noise, times)
        target = velocity_target(x0, noise)
        txt, y_vec = self._encode_text(captions)
        cond = pack(torch.cat([masks, masked_ref], dim=1), p) if self.preset.mmdit.cond_embed else None
        img_ids = image_position_ids(t, h, w, p).to(device)
        pred = mmdit_forward(self.model, pack(x_t, p), cond, txt, y_vec, times, img_ids)
        # pack(masks) puts a frame's mask value in every feature of its tokens: feature 0 is enough.
        keep = None if c.loss.include_conditioned_frames else 1 - pack(masks, p)[..., 0]
        return flow_matching_loss(pred, pack(target, p), keep), b

    def _captions(self, batch: dict, generator: torch.Generator) -> list[str]:
        """The inference prompt form ("<text>. <fps> FPS. <m> motion score.") so training and
        sampling see the same strings (the official training appends its own variant); "" with
        probability text_dropout, which teaches the unconditional branch guidance uses."""
        dropped = (torch.rand(len(batch["text"]), generator=generator) < self.config.loss.text_dropout).tolist()
        captions = []
        for text, fps, motion, drop in zip(batch["text"], batch["fps"].tolist(), batch["motion_score"], dropped):
            captions.append("" if drop else self._caption(text, fps, motion))
        return captions

    def _caption(self, text: str, fps: float, motion: float | None) -> str:
        score = self.default_motion_score if motion is None else int(round(motion))
        return model_prompt(text, int(round(fps)), score)

    def _clean_latents(self, batch: dict, generator: torch.Generator | None) -> torch.Tensor:
        """x0: a posterior sample of the VAE (None generator: the posterior mean), float32."""
        device = self.accelerator.device
        if batch.get("mean") is not None:  # from the latent cache
            mean, logvar = batch["mean"], batch["logvar"]
        else:
            with torch.no_grad():
                mean, logvar = self.vae.moments(batch["video"].to(device, self.frozen_dtype))
        mean, logvar = mean.to(device, torch.float32), logvar.to(device, torch.float32)
        if generator is None:
            return posterior_mean(mean, self.preset.vae)
        return sample_posterior(mean, logvar, self.preset.vae, generator)

    def _encode_text(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            if self.text_cache is not None:
                txt, y_vec = self.text_cache.encode(captions, self.text_encoder)
            else:
                txt, y_vec = self.text_encoder.encode(captions)
        device = self.accelerator.device
        return txt.to(device, torch.float32), y_vec.to(device, torch.float32)

    # ------------------------------------------------------------------ set-up

    def _build_models(self) -> None:
        c, preset = self.config, self.preset
        self.frozen_dtype = DTYPES[c.runtime.mixed_precision]
        # Full fine-tunes keep float32 master weights (autocast computes in bf16/fp16); a LoRA's
        # frozen base can stay in the compute dtype, peft keeps the adapter in float32.
        base_dtype = torch.float32 if c.mode == "full" else self.frozen_dtype
        device = str(self.accelerator.device)
        transformer, vae, text_encoder = load_components(
            preset, c.ckpt_dir, device, base_dtype, random_mmdit=c.init == "random"
        )
        if base_dtype != self.frozen_dtype:
            vae, text_encoder = vae.to(dtype=self.frozen_dtype), text_encoder.to(dtype=self.frozen_dtype)
        vae.requires_grad_(False)
        text_encoder.requires_grad_(False)
        if c.mode == "full":
            transformer.requires_grad_(True)
        else:
            add_lora(transformer, c.lora)
        if c.runtime.gradient_checkpointing:
            transformer.enable_gradient_checkpointing()
        transformer.train()
        self.transformer, self.vae, self.text_encoder = transformer, vae, text_encoder
        self.trainable = [p for p in transformer.parameters() if p.requires_grad]
        self.default_motion_score = c.loss.motion_score if c.loss.motion_score != -1 else preset.sampler.motion_score
        cache_root = Path(c.loader.cache_dir) if c.loader.cache_dir else self.out_dir / "cache"
        self.cache_root = cache_root
        self.text_cache = None
        if c.loader.cache_text:
            self.text_cache = TextEmbeddingCache(cache_root / "text", self._encoder_fingerprint("text"))
        trainable = sum(p.numel() for p in self.trainable)
        total = sum(p.numel() for p in transformer.parameters())
        log.info("trainable parameters: %s of %s (%.2f%%)", f"{trainable:,}", f"{total:,}", 100 * trainable / total)

    def _encoder_fingerprint(self, role: str) -> str:
        """Identifies the frozen encoder's weights: the preset's config and seed, the VAE encoder's
        tensors (the decoder does not change latents), the text encoder folders' stats."""
        preset = self.preset
        files = []
        if preset.weights != "random":
            root = checkpoint_root(preset, self.config.ckpt_dir)
            names = [preset.files.vae] if role == "vae" else [preset.files.t5, preset.files.clip]
            for name in names:
                path = (root / name).resolve()
                if role == "vae" and path.is_file():
                    files.append(tensors_digest(path, VAE_ENCODER_PREFIXES))
                    continue
                stat = path.stat() if path.exists() else None
                files.append([str(path), stat.st_size if stat else 0, stat.st_mtime_ns if stat else 0])
        config = dataclasses.asdict(preset.vae) if role == "vae" else [
            dataclasses.asdict(preset.text), preset.mmdit.context_in_dim, preset.mmdit.vec_in_dim
        ]
        return fingerprint(role, preset.weights, preset.seed, config, files, str(self.frozen_dtype))

    def _build_loader(self) -> TrainingLoader:
        c, acc = self.config, self.accelerator
        dataset_factory, collate = VideoTextDataset, collate_samples
        if c.loader.cache_latents:
            cache = LatentCache(self.cache_root / "latents", self._encoder_fingerprint("vae"))

            def dataset_factory(records, buckets, fps):
                source = VideoTextDataset(records, buckets, fps)
                encoded, failed = fill_latent_cache(
                    source, cache, self._encode_moments, c.seed, acc.process_index, acc.num_processes
                )
                acc.wait_for_everyone()
                log.info("latent cache %s: encoded %d samples now, %d unreadable", cache.root, encoded, failed)
                return CachedLatentDataset(source, cache)

            collate = collate_cached
        return make_dataloader(
            c.data, bucket_config_path(c.buckets), num_workers=c.loader.num_workers, seed=c.seed,
            rank=acc.process_index, world_size=acc.num_processes, dataset_factory=dataset_factory, collate_fn=collate,
        )

    def _encode_moments(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, logvar = self.vae.moments(video.to(self.accelerator.device, self.frozen_dtype))
        return mean.float().cpu(), logvar.float().cpu()

    def _endless_batches(self):
        empty_epochs = 0
        while True:
            delivered = 0
            for batch in self.loader:
                delivered += 1
                yield batch
            empty_epochs = 0 if delivered else empty_epochs + 1
            if empty_epochs >= MAX_EMPTY_EPOCHS:
                summary = self.loader.summary
                raise UserError(
                    f"the data gives no batch to train on: {summary.describe()}; every bucket needs at least "
                    f"batch_size readable samples (lower batch_size in {self.config.buckets} or add data)"
                )

    def _make_ema(self):
        if not self.config.ema.decay:
            return None
        if self.accelerator.distributed_type == DistributedType.FSDP:
            raise UserError("ema.decay > 0 is not supported with FSDP (sharded parameters); use DDP or turn EMA off")
        from diffusers.training_utils import EMAModel

        return EMAModel(self.trainable, decay=self.config.ema.decay)

    # ------------------------------------------------------------------ evaluation

    def _prepare_eval_batch(self) -> EvalBatch | None:
        """The first batch of epoch 0 on this process, decoded with a fixed crop, as posterior means."""
        dataset, plan = self.loader.dataloader.dataset, self.loader.sampler.plan(0)
        for indices in plan[:8]:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.config.seed)
                items = [item for item in (dataset[i] for i in indices) if item is not None]
            if items:
                break
        else:
            log.warning("no readable batch for the fixed eval loss; eval_loss is not reported")
            return None
        batch = (collate_cached if "mean" in items[0] else collate_samples)(items)
        x0 = self._clean_latents(batch, None)
        captions = [self._caption(t, f, m) for t, f, m in zip(batch["text"], batch["fps"].tolist(), batch["motion_score"])]
        txt, y_vec = self._encode_text(captions)
        generator = torch.Generator().manual_seed(self.config.seed)
        noises = [torch.randn(x0.shape, generator=generator).to(x0.device) for _ in EVAL_TIMES]
        return EvalBatch(x0, txt, y_vec, noises)

    @torch.no_grad()
    def _evaluate(self, step: int) -> float | None:
        """Loss of the fixed eval batch (text-to-video, no dropout) at fixed noise and times."""
        if self.eval_batch is None:
            return None
        e, p = self.eval_batch, self.preset.mmdit.patch_size
        b, c, t, h, w = e.x0.shape
        alpha = timestep_shift(self.preset.sampler, (h // p) * (w // p), t)
        img_ids = image_position_ids(t, h, w, p).to(e.x0.device)
        cond = None
        if self.preset.mmdit.cond_embed:
            cond = torch.zeros(b, img_ids.shape[0], self.preset.mmdit.cond_channels, device=e.x0.device)
        self.model.eval()
        losses = []
        for raw_t, noise in zip(EVAL_TIMES, e.noises):
            times = shift_timesteps(torch.full((b,), raw_t), alpha).to(e.x0.device)
            pred = mmdit_forward(self.model, pack(noisy_latent(e.x0, noise, times), p), cond, e.txt, e.y_vec, times, img_ids)
            losses.append(flow_matching_loss(pred, pack(velocity_target(e.x0, noise), p)))
        self.model.train()
        value = self.accelerator.reduce(torch.stack(losses).mean(), "mean").item()
        log.info("eval loss at step %d: %.5f", step, value)
        if self.metrics is not None:
            self.metrics.log_eval(step, value)
        return value

    # ------------------------------------------------------------------ checkpoints

    def _resume_step_hint(self) -> int:
        """The step a resumed run will start from, read from folder names only, so status.json keeps
        showing the run's real step while the set-up runs (and if the set-up fails)."""
        if self.resume in (None, "", "none"):
            return 0
        if self.resume == "auto":
            found = checkpointing.complete_checkpoints(self.checkpoint_root)
            return found[-1][0] if found else 0
        return checkpointing.step_of(Path(self.resume)) or 0

    def _find_resume(self) -> tuple[Path | None, CheckpointData | None]:
        """The checkpoint to continue from and its data; `auto` skips unreadable ones (e.g. a file
        truncated by a full disk) with a warning naming the file, newest first."""
        root = self.checkpoint_root
        if self.main:
            for path in checkpointing.remove_incomplete(root):
                log.warning("removed incomplete checkpoint %s (left by an interrupted save)", path.name)
        self.accelerator.wait_for_everyone()
        found = checkpointing.complete_checkpoints(root)
        if self.resume in (None, "", "none"):
            if found:
                raise UserError(
                    f"{root} already holds checkpoints up to {found[-1][1].name}: pass --resume auto to continue "
                    "that run, or choose another --output-dir"
                )
            return None, None
        if self.resume == "auto":
            if not found:
                log.info("--resume auto: no complete checkpoint in %s; starting at step 0", root)
                return None, None
            unreadable = []
            for _, path in reversed(found):
                try:
                    return path, checkpointing.read_checkpoint(path)
                except UserError as err:
                    unreadable.append(path.name)
                    log.warning("--resume auto: skipping %s: %s", path.name, err)
            raise UserError(f"--resume auto: no checkpoint in {root} reads ({', '.join(unreadable)}); "
                            "see the warnings above, or start a new run in another --output-dir")
        path = Path(self.resume)
        if not (path / checkpointing.COMPLETE_MARKER).is_file():
            raise UserError(f"--resume {self.resume}: not a complete checkpoint folder (use auto, none or a step-NNNNNN folder)")
        return path, checkpointing.read_checkpoint(path)

    def _check_compatible(self, state: CheckpointData, path: Path) -> None:
        before = state.json.get("trainer", {}).get("config", {})
        now = self.config.to_dict()
        fields = ["preset", "mode"] + (["lora.rank", "lora.alpha", "lora.target_modules"] if self.config.mode == "lora" else [])
        for dotted in fields:
            old, new = before, now
            for part in dotted.split("."):
                old, new = (old or {}).get(part), new.get(part)
            if old is not None and old != new:
                raise UserError(f"checkpoint {path} was trained with {dotted} = {old!r}, this run has {new!r}; they must match to resume")
        for name in ("data", "buckets", "seed"):
            if before.get(name) is not None and before.get(name) != now[name]:
                log.warning("resuming %s with %s = %r (was %r): the data order changes", path, name, now[name], before[name])

    def _load_weights(self, state: CheckpointData, path: Path) -> None:
        stem = WEIGHT_STEMS[self.config.mode]
        if stem not in state.tensors:
            raise UserError(f"checkpoint {path} has no {stem}.safetensors")
        if self.config.mode == "lora":
            load_lora_pairs(self.transformer, pairs_from_file_tensors(state.tensors[stem], path), path)
        else:
            weights = official_to_diffusers(state.tensors[stem], self.preset.mmdit)
            self.transformer.load_state_dict({k: v.float() for k, v in weights.items()}, strict=True)

    def _restore_state(self, state: CheckpointData) -> None:
        acc = self.accelerator
        optim_state = unflatten_optimizer_state(state.tensors.get("optimizer", {}), state.json["optimizer"])
        set_optimizer_state_dict(
            self.model, self.optimizer.optimizer, optim_state,
            options=StateDictOptions(full_state_dict=acc.num_processes > 1),
        )
        self.scheduler.load_state_dict(state.json["scheduler"])
        self.loader.load_state_dict(state.json["loader"])
        if self.ema is not None and "ema" in state.tensors:
            shadow = [state.tensors["ema"][name].to(acc.device) for name in self.trainable_names]
            self.ema.load_state_dict({**state.json["ema"], "shadow_params": shadow})
        rank = f"rank{acc.process_index}"
        rng_tensors = {k.removeprefix(rank + "."): v for k, v in state.tensors.get("rng", {}).items() if k.startswith(rank + ".")}
        if rng_tensors and rank in state.json.get("rng", {}):
            set_rng_state(rng_tensors, state.json["rng"][rank])
        else:
            log.warning("checkpoint has no RNG state for %s (other number of processes?); data crops will differ", rank)
        trainer = state.json["trainer"]
        self.step = self.resumed_from = state.step
        self.elapsed_before = trainer.get("elapsed_s", 0.0)
        self.samples_seen = trainer.get("samples_seen", 0)
        self.eval_loss_start = trainer.get("eval_loss_start")
        log.info("resumed from step %d (%s)", state.step, self.checkpoint_root / checkpointing.step_dir_name(state.step))

    def _gather_rng(self) -> tuple[dict[str, torch.Tensor], dict]:
        tensors, rest = rng_state()
        acc = self.accelerator
        if acc.num_processes == 1:
            return {f"rank0.{k}": v for k, v in tensors.items()}, {"rank0": rest}
        entries = gather_object([(acc.process_index, {k: (v.tolist(), str(v.dtype)) for k, v in tensors.items()}, rest)])
        all_tensors, all_rest = {}, {}
        for rank, rank_tensors, rank_rest in entries:
            for key, (values, dtype) in rank_tensors.items():
                all_tensors[f"rank{rank}.{key}"] = torch.tensor(values, dtype=getattr(torch, dtype.removeprefix("torch.")))
            all_rest[f"rank{rank}"] = rank_rest
        return all_tensors, all_rest

    def _weights_output(self) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        """The trained weights as written to disk (copies): a LoRA file, or the MMDiT in the
        official key layout that `load_components` / `load_mmdit_weights` read."""
        state = get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if self.config.mode == "lora":
            pairs = {m: (a.detach().cpu().clone(), b.detach().cpu().clone()) for m, (a, b) in pairs_from_state_dict(state).items()}
            return lora_output(pairs, self.config.lora, self.preset.name, self.step)
        official = diffusers_to_official(state, self.preset.mmdit)
        tensors = {k: v.detach().to("cpu", torch.float32, copy=True).contiguous() for k, v in official.items()}
        return tensors, {"format": "opensora-v2-mmdit", "preset": self.preset.name, "step": str(self.step)}

    def _elapsed(self) -> float:
        """Seconds this run has trained, over all its sessions (resumes)."""
        return self.elapsed_before + time.time() - self.session_started

    def _save_checkpoint(self) -> None:
        """Collect the state on every process (FSDP gathers), write it from the main one."""
        acc, c = self.accelerator, self.config
        weights, weights_metadata = self._weights_output()
        optim_state = get_optimizer_state_dict(
            self.model, self.optimizer.optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
        )
        rng_tensors, rng_rest = self._gather_rng()
        if not self.main:
            return
        data = CheckpointData(step=self.step)
        stem = WEIGHT_STEMS[c.mode]
        data.tensors[stem], data.metadata[stem] = weights, weights_metadata
        data.tensors["optimizer"], data.json["optimizer"] = flatten_optimizer_state(optim_state)
        data.json["scheduler"] = self.scheduler.state_dict()
        data.json["loader"] = self.loader.state_dict()
        data.tensors["rng"], data.json["rng"] = rng_tensors, rng_rest
        if self.ema is not None:
            ema_state = self.ema.state_dict()
            data.tensors["ema"] = {n: t.detach().cpu().clone() for n, t in zip(self.trainable_names, ema_state.pop("shadow_params"))}
            data.json["ema"] = ema_state
        data.json["trainer"] = {
            "step": self.step, "total_steps": c.steps, "samples_seen": self.samples_seen, "elapsed_s": self._elapsed(),
            "eval_loss_start": self.eval_loss_start, "world_size": acc.num_processes, "config": c.to_dict(),
        }
        self.saver.save(data)

    def _write_output(self) -> Path:
        """OUTPUT_DIR/lora.safetensors or model.safetensors, from the EMA weights when EMA is on."""
        if self.ema is not None:
            self.ema.store(self.trainable)
            self.ema.copy_to(self.trainable)
        try:
            tensors, metadata = self._weights_output()
        finally:
            if self.ema is not None:
                self.ema.restore(self.trainable)
        path = self.out_dir / OUTPUT_FILES[self.config.mode]
        if self.main:
            save_safetensors_atomic(tensors, path, metadata)
            log.info("wrote %s", path)
        return path
