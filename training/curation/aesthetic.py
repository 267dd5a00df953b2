"""Stage aesthetic: the CLIP-based aesthetic predictor (LAION's "improved aesthetic predictor", as
Open-Sora's data pipeline used it), only from weights in a local folder.

``--aesthetic-weights DIR`` holds ``clip/`` (a CLIP model in the transformers layout with
safetensors weights and its preprocessor_config.json, e.g. a link to
ckpts/openai/clip-vit-large-patch14) and ``head.safetensors`` (the predictor's MLP:
``layers.N.weight``/``layers.N.bias`` linear layers applied in N order with no activation in
between, as in the original; its first layer takes the CLIP image embedding). The score of a clip
is the mean over ``frames`` evenly spaced frames of head(normalised CLIP image embedding).
Without the flag the stage is skipped with a notice; no score is ever made up.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from opensora.errors import UserError
from training.curation.engines import worker_threads
from training.curation.frames import DecodeError, decode_frames, evenly_spaced, row_frame_count
from training.curation.stage import ItemResult, Stage
from training.curation.table import Row, format_number

HEAD_FILE = "head.safetensors"
CLIP_DIR = "clip"
SKIP_NOTICE = "no --aesthetic-weights folder given (it needs clip/ and head.safetensors); no aesthetic scores"


@dataclass(frozen=True)
class AestheticConfig:
    weights_dir: str = ""  # empty: the stage is skipped
    frames: int = 3
    min_score: float | None = None

    def __post_init__(self) -> None:
        if self.frames < 1:
            raise UserError(f"--aesthetic-frames is {self.frames}; must be >= 1")


def skip_reason(config: AestheticConfig) -> str | None:
    return None if config.weights_dir else SKIP_NOTICE


def check_weights(weights_dir: str) -> None:
    """Before any work: the folder has what the predictor loads (UserError naming what is missing)."""
    root = Path(weights_dir)
    needed = [root / HEAD_FILE, root / CLIP_DIR / "config.json", root / CLIP_DIR / "preprocessor_config.json"]
    missing = [str(p) for p in needed if not p.is_file()]
    if not list((root / CLIP_DIR).glob("*.safetensors")):
        missing.append(str(root / CLIP_DIR / "*.safetensors"))
    if missing:
        raise UserError(f"--aesthetic-weights {root} is incomplete; missing: {', '.join(missing)}")


class AestheticPredictor:
    def __init__(self, weights_dir: str):
        import torch  # noqa: PLC0415 - only this stage's workers load torch and transformers
        from safetensors.torch import load_file
        from transformers import CLIPImageProcessorPil, CLIPVisionModelWithProjection

        root = Path(weights_dir)
        self.torch = torch
        self.processor = CLIPImageProcessorPil.from_pretrained(root / CLIP_DIR)
        self.clip = CLIPVisionModelWithProjection.from_pretrained(root / CLIP_DIR, use_safetensors=True).eval()
        self.layers = _linear_layers(load_file(str(root / HEAD_FILE)), self.clip.config.projection_dim, root / HEAD_FILE)

    def score(self, frames: list[np.ndarray]) -> float:
        torch = self.torch
        with torch.inference_mode():
            pixels = self.processor(images=frames, return_tensors="pt")["pixel_values"]
            embeds = self.clip(pixel_values=pixels).image_embeds.float()
            x = embeds / embeds.norm(dim=-1, keepdim=True)
            for weight, bias in self.layers:
                x = x @ weight.T + bias
        return float(x.mean())


def _linear_layers(tensors: dict, in_features: int, source: Path) -> list:
    indices = sorted({int(m.group(1)) for k in tensors if (m := re.fullmatch(r"layers\.(\d+)\.weight", k))})
    if not indices:
        raise UserError(f"{source} has no layers.N.weight tensors; found {sorted(tensors)[:6]}")
    layers, width = [], in_features
    for i in indices:
        weight, bias = tensors[f"layers.{i}.weight"].float(), tensors.get(f"layers.{i}.bias")
        if weight.ndim != 2 or weight.shape[1] != width or bias is None or bias.shape != (weight.shape[0],):
            raise UserError(f"{source}: layers.{i} has weight {tuple(weight.shape)}; expected (N, {width}) with a bias (N,)")
        layers.append((weight, bias.float()))
        width = weight.shape[0]
    if width != 1:
        raise UserError(f"{source}: the last layer gives {width} values; an aesthetic head gives 1")
    return layers


@functools.cache
def predictor(weights_dir: str, threads: int) -> AestheticPredictor:
    model = AestheticPredictor(weights_dir)
    if threads:
        model.torch.set_num_threads(threads)
    return model


def aesthetic_row(row: Row, config: AestheticConfig) -> ItemResult:
    try:
        frames = decode_frames(row, evenly_spaced(row_frame_count(row), config.frames))
    except DecodeError as e:
        return ItemResult.drop("unreadable", str(e))
    if not frames:
        return ItemResult.drop("unreadable", f"no frames decoded from {row['path']}")
    score = predictor(config.weights_dir, worker_threads()).score(list(frames.values()))
    if config.min_score is not None and score < config.min_score:
        return ItemResult.drop("low aesthetic score", f"{row['path']}: aesthetic {score:.3f} < {config.min_score}")
    return ItemResult(rows=[dict(row, aesthetic=format_number(score))])


STAGE = Stage(name="aesthetic", columns=("aesthetic",), process=aesthetic_row, unit="clip")
