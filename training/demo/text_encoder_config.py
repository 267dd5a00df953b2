"""Settings of `python -m training train-text-encoders` (torch-free, so `--help` is instant)."""

from __future__ import annotations

from dataclasses import dataclass, field

from opensora.configs import TextConfig


@dataclass
class TextTrainConfig:
    steps: int = 600
    batch_size: int = 64
    lr: float = 3e-3
    warmup_steps: int = 30
    weight_decay: float = 0.01
    num_captions: int = 6000  # training pool (rendered-caption phrasings + canonical captions)
    eval_captions: int = 400  # captions of held-out combinations
    fps: int = 12
    motion_score: int = 4
    other_score_fraction: float = 0.2  # captions with a random motion score 1..15 instead of 4
    width: int = 64  # T5 d_model = MMDiT context_in_dim; CLIP hidden = vec_in_dim
    layers: int = 2
    heads: int = 2
    ff: int = 128
    seed: int = 0
    threads: int = 1
    text: TextConfig = field(default_factory=lambda: TextConfig(t5_max_length=24, clip_max_length=24))
