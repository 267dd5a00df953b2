"""Trainer settings: dataclasses filled from a TOML file (presets/train-*.toml), then from flags.

The TOML has the top-level keys of `TrainConfig` and one table per nested dataclass
([optim], [loss], [conditioning], [lora], [ema], [checkpoint], [log], [loader], [runtime]);
every key is optional, unknown keys are errors. See presets/train-default.toml and
training/README.md. Command-line flags override single values by dotted name ("optim.lr").
"""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opensora.errors import UserError
from opensora.generation_settings import SEED_MAX
from opensora.presets import DEFAULT_CKPT_DIR, FAMILY_V2, PRESET_DIR, load_preset

# Kept free of torch/diffusers imports so `--help` is instant.

INITS = ("preset", "random")
MODES = ("lora", "full")
MIXED_PRECISION = ("no", "bf16", "fp16")
LR_SCHEDULES = ("constant", "cosine", "linear")  # shape after the warmup
SCHEDULER_NAMES = {"constant": "constant_with_warmup", "cosine": "cosine", "linear": "linear"}  # diffusers' names
DEVICES = ("auto", "cpu", "cuda")

# diffusers' names of the MMDiT's attention projections: image and text streams of the
# double blocks, and the single blocks (which share `attn.to_q/k/v` names).
DEFAULT_LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out"]


@dataclass
class OptimConfig:
    """AdamW with warmup; eps and grad_clip as in the official Open-Sora 2.0 training configs."""

    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-15
    weight_decay: float = 0.0
    warmup_steps: int = 0
    schedule: str = "constant"
    grad_clip: float = 1.0  # max global grad norm; 0 = no clipping
    grad_accum: int = 1  # batches per optimizer step


@dataclass
class LossConfig:
    text_dropout: float = 0.1  # caption -> "" so the unconditional branch of guidance is learnt
    include_conditioned_frames: bool = True  # MSE over all tokens (official) or only the generated ones
    logit_normal_mean: float = 0.0  # t = sigmoid(N(mean, std)) before the resolution shift
    logit_normal_std: float = 1.0
    # x0 is a fresh VAE posterior sample each step (official) or, false, the posterior mean: when
    # the VAE's decoder ignores its posterior noise, a sample only adds to the target noise that the
    # MMDiT cannot predict (training/demo/HISTORY.md, runs 15-16).
    posterior_sample: bool = True
    # Motion score written into captions of rows without a motion_score column; -1: the preset's
    # sampler default, so training sees the same "<p>. <fps> FPS. <m> motion score." as sampling.
    motion_score: int = -1


@dataclass
class ConditioningMix:
    """Relative weight of each cond type per training sample (normalised). The official stage
    configs give such weights per type in their `condition_config`; the default here keeps
    text-to-video the most frequent and every image/video layout present."""

    t2v: float = 0.5
    i2v_head: float = 0.3
    i2v_tail: float = 0.05
    i2v_loop: float = 0.05
    v2v_head: float = 0.05
    v2v_tail: float = 0.05
    v2v_head_easy: float = 0.0
    v2v_tail_easy: float = 0.0

    def weights(self) -> dict[str, float]:
        """cond type -> weight; the field names are the sampler's COND_TYPES (a test checks it)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


@dataclass
class LoraSettings:
    rank: int = 16
    alpha: float = 16.0  # the update is scaled by alpha / rank
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: list(DEFAULT_LORA_TARGETS))


@dataclass
class EmaConfig:
    decay: float = 0.0  # 0 = off; the official configs keep an EMA with 0.99


@dataclass
class CheckpointConfig:
    every: int = 100  # steps between checkpoints
    keep_last: int = 3
    async_save: bool = True  # write files in a background thread while training goes on


@dataclass
class LogConfig:
    every: int = 1  # steps between metrics.jsonl lines
    eval_every: int = 0  # steps between fixed-batch eval losses; 0 = only at the start and the end
    tensorboard: bool = True  # also write TensorBoard events when tensorboard is installed


@dataclass
class LoaderConfig:
    num_workers: int = 0  # DataLoader processes; 0 = decode in the training process (exact resume)
    cache_latents: bool = False  # encode every sample once (fixed crop) and keep the VAE posterior
    cache_text: bool = False  # keep text embeddings per caption on disk
    cache_dir: str = ""  # default: OUTPUT_DIR/cache


@dataclass
class RuntimeConfig:
    device: str = "auto"  # auto (cuda when there is one), cpu or cuda
    mixed_precision: str = "no"  # no (fp32), bf16 or fp16 (fp16: GPU only)
    gradient_checkpointing: bool = False
    threads: int = 0  # torch CPU threads; 0 = torch's default


@dataclass
class TrainConfig:
    preset: str = ""  # model preset name or TOML path
    data: str = ""  # training CSV (path,text[,num_frames,height,width,fps,motion_score])
    output_dir: str = ""
    buckets: str = ""  # bucket table: presets/buckets-NAME.toml, NAME or a path; "": the preset's own (preset_bucket_table)
    ckpt_dir: str = DEFAULT_CKPT_DIR  # official checkpoints, for official presets
    mode: str = "lora"  # "lora" or "full"
    init: str = "preset"  # "preset": start from the preset's MMDiT weights; "random": from scratch (full mode)
    steps: int = 1000  # optimizer steps in total (a resumed run counts from its checkpoint)
    seed: int = 0
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    conditioning: ConditioningMix = field(default_factory=ConditioningMix)
    lora: LoraSettings = field(default_factory=LoraSettings)
    ema: EmaConfig = field(default_factory=EmaConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    log: LogConfig = field(default_factory=LogConfig)
    loader: LoaderConfig = field(default_factory=LoaderConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=True)


# --------------------------------------------------------------------------- loading


def train_config_path(name_or_path: str) -> Path:
    """presets/train-NAME.toml for a bare name, else the path itself."""
    path = Path(name_or_path)
    if path.suffix != ".toml":
        path = PRESET_DIR / f"train-{name_or_path}.toml"
    if not path.is_file():
        known = sorted(p.stem.removeprefix("train-") for p in PRESET_DIR.glob("train-*.toml"))
        raise UserError(f"training config {name_or_path!r} not found ({path}); available: {', '.join(known)}")
    return path


def load_train_config(name_or_path: str = "default") -> TrainConfig:
    path = train_config_path(name_or_path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise UserError(f"training config {path} is not valid TOML: {err}") from None
    return config_from_dict(data, str(path))


def config_from_dict(data: dict, source: str = "<dict>") -> TrainConfig:
    return _fill(TrainConfig, data, source)


def _fill(cls, data: dict, where: str):
    if not isinstance(data, dict):
        raise UserError(f"{where}: must be a table, got {data!r}")
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(data) - set(hints))
    if unknown:
        raise UserError(f"{where}: unknown keys {unknown}; allowed: {sorted(hints)}")
    values = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            values[name] = _fill(hint, value, f"{where} [{name}]")
        else:
            values[name] = _coerce(value, hint, f"{where}: {name}")
    return cls(**values)


def _coerce(value: Any, hint, where: str) -> Any:
    """Check a TOML or flag value against the field's type; ints are accepted for floats."""
    origin = typing.get_origin(hint)
    if hint is bool:
        if not isinstance(value, bool):
            raise UserError(f"{where} is {value!r}; must be true or false")
        return value
    if hint is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise UserError(f"{where} is {value!r}; must be an integer")
        return value
    if hint is float:
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise UserError(f"{where} is {value!r}; must be a finite number")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise UserError(f"{where} is {value!r}; must be a string")
        return value
    if origin is list:
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise UserError(f"{where} is {value!r}; must be a list of non-empty strings")
        return list(value)
    if origin is tuple:
        size = len(typing.get_args(hint))
        if not isinstance(value, (list, tuple)) or len(value) != size:
            raise UserError(f"{where} is {value!r}; must be a list of {size} numbers")
        return tuple(_coerce(v, float, where) for v in value)
    raise TypeError(f"unsupported config type {hint} at {where}")


def apply_overrides(config: TrainConfig, overrides: dict[str, Any]) -> TrainConfig:
    """Set dotted names ("optim.lr") to new values, type-checked like the TOML; None is skipped."""
    for dotted, value in overrides.items():
        if value is None:
            continue
        *parents, name = dotted.split(".")
        target = config
        for part in parents:
            target = getattr(target, part)
        hint = typing.get_type_hints(type(target))[name]
        setattr(target, name, _coerce(value, hint, f"--{dotted}"))
    return config


# --------------------------------------------------------------------------- validation


def _check(where: str, value, low, high, low_open: bool = False, high_open: bool = False) -> None:
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if too_low or too_high:
        left, right = "(" if low_open else "[", ")" if high_open else "]"
        raise UserError(f"{where} is {value!r}; allowed range {left}{low:g}, {high:g}{right}")


def check_trainable_preset(config: TrainConfig) -> None:
    """The trainer builds an MMDiT: an Open-Sora 1.2 preset is refused before a run starts. (Not in
    `validate`: a recipe validates steps whose preset copies earlier steps have yet to write.)"""
    preset = load_preset(config.preset)  # torch-free
    if preset.family != FAMILY_V2:
        raise UserError(f"preset {preset.name} is {preset.family_name}: the trainer fine-tunes Open-Sora 2.0 "
                        "presets (the MMDiT) only; Open-Sora 1.2 presets generate but do not train")


def validate(config: TrainConfig) -> TrainConfig:
    """Every value inside its range, and the required ones present. Returns the config."""
    for name, flag in (("preset", "--preset"), ("data", "--data"), ("output_dir", "--output-dir")):
        if not getattr(config, name):
            raise UserError(f"{flag} is required (or set `{name}` in the training config TOML)")
    if config.mode not in MODES:
        raise UserError(f"mode is {config.mode!r}; allowed: {', '.join(MODES)}")
    if config.init not in INITS:
        raise UserError(f"init is {config.init!r}; allowed: {', '.join(INITS)}")
    if config.init == "random" and config.mode != "full":
        raise UserError("init 'random' (training from scratch) needs mode 'full'")
    _check("steps", config.steps, 1, 10_000_000)
    _check("seed", config.seed, 0, SEED_MAX)

    o = config.optim
    _check("optim.lr", o.lr, 0, 1, low_open=True)
    for beta in o.betas:
        _check("optim.betas", beta, 0, 1, high_open=True)
    _check("optim.eps", o.eps, 0, 1e-3, low_open=True)
    _check("optim.weight_decay", o.weight_decay, 0, 1)
    _check("optim.warmup_steps", o.warmup_steps, 0, 10_000_000)
    if o.schedule not in LR_SCHEDULES:
        raise UserError(f"optim.schedule is {o.schedule!r}; allowed: {', '.join(LR_SCHEDULES)}")
    _check("optim.grad_clip", o.grad_clip, 0, 1e6)
    _check("optim.grad_accum", o.grad_accum, 1, 1024)

    loss = config.loss
    _check("loss.text_dropout", loss.text_dropout, 0, 1)
    _check("loss.logit_normal_std", loss.logit_normal_std, 0, 10, low_open=True)
    _check("loss.logit_normal_mean", loss.logit_normal_mean, -10, 10)
    if loss.motion_score != -1:
        _check("loss.motion_score (-1 = preset default)", loss.motion_score, 1, 15)

    weights = config.conditioning.weights()
    for name, weight in weights.items():
        _check(f"conditioning.{name}", weight, 0, 1e6)
    if sum(weights.values()) <= 0:
        raise UserError(f"conditioning weights {weights} sum to 0; at least one must be > 0 (e.g. t2v = 1)")

    lora = config.lora
    _check("lora.rank", lora.rank, 1, 1024)
    _check("lora.alpha", lora.alpha, 0, 1e6, low_open=True)
    _check("lora.dropout", lora.dropout, 0, 1, high_open=True)
    if not lora.target_modules:
        raise UserError("lora.target_modules is empty; name at least one layer, e.g. [\"to_q\", \"to_v\"]")

    if config.ema.decay != 0:
        _check("ema.decay (0 = off)", config.ema.decay, 0.5, 1, high_open=True)
    _check("checkpoint.every", config.checkpoint.every, 1, 10_000_000)
    _check("checkpoint.keep_last", config.checkpoint.keep_last, 1, 1000)
    _check("log.every", config.log.every, 1, 10_000_000)
    _check("log.eval_every", config.log.eval_every, 0, 10_000_000)
    _check("loader.num_workers", config.loader.num_workers, 0, 64)

    runtime = config.runtime
    if runtime.device not in DEVICES:
        raise UserError(f"runtime.device is {runtime.device!r}; allowed: {', '.join(DEVICES)} (GPUs per process: accelerate launch)")
    if runtime.mixed_precision == "fp16" and runtime.device == "cpu":
        raise UserError("runtime.mixed_precision fp16 needs a GPU; on the CPU use bf16 or no")
    if runtime.mixed_precision not in MIXED_PRECISION:
        raise UserError(f"runtime.mixed_precision is {runtime.mixed_precision!r}; allowed: {', '.join(MIXED_PRECISION)}")
    _check("runtime.threads", runtime.threads, 0, 1024)
    return config


def bucket_config_path(name_or_path: str) -> Path:
    """presets/buckets-NAME.toml (NAME or buckets-NAME), else the path itself."""
    path = Path(name_or_path)
    if path.suffix != ".toml":
        path = PRESET_DIR / f"buckets-{name_or_path.removeprefix('buckets-')}.toml"
    if not path.is_file():
        known = sorted(p.stem for p in PRESET_DIR.glob("buckets-*.toml"))
        raise UserError(f"bucket table {name_or_path!r} not found ({path}); available: {', '.join(known)}")
    return path


def preset_bucket_table(preset_name: str, resolution: str) -> str:
    """The bucket table a preset trains on unless one is chosen: presets/buckets-<preset name>.toml,
    else buckets-<its sampler resolution>.toml (tiny-random -> buckets-tiny, opensora-v2-256px ->
    buckets-256px)."""
    for name in (preset_name, resolution):
        if (PRESET_DIR / f"buckets-{name}.toml").is_file():
            return name
    known = sorted(p.stem for p in PRESET_DIR.glob("buckets-*.toml"))
    raise UserError(f"preset {preset_name} has no bucket table (presets/buckets-{preset_name}.toml or "
                    f"buckets-{resolution}.toml); pass --buckets, one of: {', '.join(known)}")
