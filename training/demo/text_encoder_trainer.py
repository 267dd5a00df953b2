"""Tokenizer + tiny T5/CLIP text encoders for the demo model, trained on shapes-world captions.

The tokenizer is word-level (`tokenizers`), fitted on the captions the renderer writes plus the
suffixes the pipeline appends. The encoders are transformers' `T5EncoderModel` and
`CLIPTextModel` at width 64. There is no text corpus to pre-train on, so they learn a supervised
task instead: linear heads on the CLIP pooled vector and on the mean T5 state predict the
clip's colour, shape, motion and background. That makes the embeddings the MMDiT sees separate
exactly the attributes the videos differ in, and makes paraphrases land close together.

Every caption goes through `model_prompt(..., fps=12, motion_score=4)` first, as in generation.
Attributes a caption does not mention (and all four for the empty, unconditional prompt) are
trained towards the uniform distribution: "unspecified" rather than a guess.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
from torch import nn
from transformers import CLIPTextConfig, CLIPTextModel, PreTrainedTokenizerFast, T5Config, T5EncoderModel

from opensora.models.text_encoders import SPECIAL_TOKENS, TextConfig
from opensora.prompts import model_prompt
from opensora.refine.shapes_world import shapes_world_caption
from training.demo.shapes_world import BACKGROUNDS, COLOURS, MOTIONS, SHAPES, Combo, caption, sample_spec
from training.demo.text_encoder_config import TextTrainConfig

log = logging.getLogger(__name__)

ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "colour": tuple(COLOURS), "shape": SHAPES, "motion": MOTIONS, "background": tuple(BACKGROUNDS),
}
UNSPECIFIED = -1  # label of an attribute the caption does not mention
_BACKGROUND_WORDS = {"black": "black", "gray": "gray", "grey": "gray"}


# --------------------------------------------------------------------------- captions


@dataclass
class Sample:
    text: str  # as the encoders see it (model_prompt applied)
    labels: tuple[int, int, int, int]  # colour, shape, motion, background; UNSPECIFIED if not said


def _labels(combo: Combo, text: str, motion_said: bool) -> tuple[int, int, int, int]:
    words = set(text.lower().replace(",", " ").replace(".", " ").split())
    background_said = any(w in words for w in _BACKGROUND_WORDS)
    return (
        ATTRIBUTES["colour"].index(combo.colour),
        ATTRIBUTES["shape"].index(combo.shape),
        ATTRIBUTES["motion"].index(combo.motion) if motion_said else UNSPECIFIED,
        ATTRIBUTES["background"].index(combo.background) if background_said else UNSPECIFIED,
    )


def _suffixed(text: str, cfg: TextTrainConfig, rng: np.random.Generator) -> str:
    score = int(rng.integers(1, 16)) if rng.random() < cfg.other_score_fraction else cfg.motion_score
    return model_prompt(text, fps=cfg.fps, motion_score=score)


def make_samples(cfg: TextTrainConfig, num: int, seed: int, held_out: bool) -> list[Sample]:
    """Renderer phrasings of video and image specs, canonical captions, and the empty prompt."""
    rng = np.random.default_rng(seed)
    samples = [Sample(model_prompt("", fps=cfg.fps, motion_score=cfg.motion_score), (UNSPECIFIED,) * 4)]
    while len(samples) < num:
        kind = rng.random()
        if kind < 0.1 and not held_out:  # the unconditional prompt, kept in the mix
            samples.append(Sample(_suffixed("", cfg, rng), (UNSPECIFIED,) * 4))
            continue
        is_image = kind > 0.85
        spec = sample_spec(rng, held_out=held_out, num_frames=1 if is_image else 33)
        if kind < 0.35:  # the normaliser's canonical form (what generation feeds the encoders)
            text = shapes_world_caption(spec.colour, spec.shape, spec.motion, spec.background)
            motion_said = True
        else:
            text = caption(spec, rng)
            motion_said = not is_image  # every video template names the motion; image ones may not
        samples.append(Sample(_suffixed(text, cfg, rng), _labels(spec.combo, text, motion_said)))
    return samples


def tokenizer_corpus(cfg: TextTrainConfig, seed: int) -> list[str]:
    """Every word the encoders may see: many phrasings, every canonical caption, every suffix."""
    texts = [s.text for s in make_samples(cfg, 4000, seed, held_out=False)]
    texts += [s.text for s in make_samples(cfg, 200, seed + 1, held_out=True)]
    for colour in COLOURS:
        for shape in SHAPES:
            for motion in MOTIONS:
                for background in BACKGROUNDS:
                    texts.append(shapes_world_caption(colour, shape, motion, background))
    texts += [model_prompt("", fps=fps, motion_score=score) for fps in (12, 24) for score in range(1, 16)]
    return texts


# --------------------------------------------------------------------------- tokenizer


def train_word_tokenizer(corpus: list[str]) -> Tokenizer:
    """Lowercased words and punctuation marks; ids 0-3 are SPECIAL_TOKENS (<pad> </s> <unk> <s>)."""
    tokenizer = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()  # \w+ | [^\w\s]+
    trainer = trainers.WordLevelTrainer(special_tokens=SPECIAL_TOKENS, min_frequency=1)
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    return tokenizer


def styled_tokenizer(base: Tokenizer, style: str, max_length: int) -> PreTrainedTokenizerFast:
    """T5 style: `text </s>` padded with <pad>. CLIP style: `<s> text </s>` padded with </s>."""
    tokenizer = Tokenizer.from_str(base.to_str())
    eos, bos = tokenizer.token_to_id("</s>"), tokenizer.token_to_id("<s>")
    if style == "t5":
        tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", eos)])
        pad = "<pad>"
    else:
        tokenizer.post_processor = processors.TemplateProcessing(
            single="<s> $A </s>", special_tokens=[("<s>", bos), ("</s>", eos)]
        )
        pad = "</s>"
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token=pad, eos_token="</s>", unk_token="<unk>", bos_token="<s>",
        model_max_length=max_length,
    )


# --------------------------------------------------------------------------- models


def build_encoders(cfg: TextTrainConfig, t5_tok, clip_tok) -> tuple[T5EncoderModel, CLIPTextModel]:
    t5 = T5EncoderModel(T5Config(
        vocab_size=len(t5_tok), d_model=cfg.width, d_kv=cfg.width // cfg.heads, d_ff=cfg.ff,
        num_layers=cfg.layers, num_heads=cfg.heads, dropout_rate=0.0,
        pad_token_id=t5_tok.pad_token_id, eos_token_id=t5_tok.eos_token_id, decoder_start_token_id=t5_tok.pad_token_id,
    ))
    clip = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(clip_tok), hidden_size=cfg.width, intermediate_size=cfg.ff,
        num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads,
        max_position_embeddings=cfg.text.clip_max_length,
        # eos_token_id != 2 makes transformers pool at the first </s> (not at the largest id).
        pad_token_id=clip_tok.pad_token_id, bos_token_id=clip_tok.bos_token_id, eos_token_id=clip_tok.eos_token_id,
    ))
    return t5, clip


class AttributeHeads(nn.Module):
    """One linear classifier per attribute on a pooled text vector (thrown away after training)."""

    def __init__(self, width: int):
        super().__init__()
        self.heads = nn.ModuleList(nn.Linear(width, len(values)) for values in ATTRIBUTES.values())

    def forward(self, pooled: torch.Tensor) -> list[torch.Tensor]:
        return [head(pooled) for head in self.heads]


def attribute_loss(logits: list[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy per attribute; an unspecified attribute is trained towards uniform."""
    total = 0.0
    for i, logit in enumerate(logits):
        target = torch.full_like(logit, 1.0 / logit.shape[1])
        said = labels[:, i] != UNSPECIFIED
        target[said] = F.one_hot(labels[said, i], logit.shape[1]).float()
        total = total + F.cross_entropy(logit, target)
    return total / len(logits)


def encode(t5, clip, t5_tok, clip_tok, texts: list[str], text_cfg: TextConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean T5 state, CLIP pooled) fed exactly as TextConditioner does: max_length padding, no mask."""
    t5_ids = t5_tok(texts, padding="max_length", truncation=True, max_length=text_cfg.t5_max_length, return_tensors="pt")["input_ids"]
    clip_ids = clip_tok(texts, padding="max_length", truncation=True, max_length=text_cfg.clip_max_length, return_tensors="pt")["input_ids"]
    states = t5(input_ids=t5_ids).last_hidden_state
    pooled = clip(input_ids=clip_ids).pooler_output
    return states.mean(dim=1), pooled


@torch.no_grad()
def accuracy(t5, clip, t5_tok, clip_tok, heads_t5, heads_clip, samples: list[Sample], text_cfg: TextConfig) -> dict:
    """Per-attribute accuracy of both heads, counted only where the caption names the attribute."""
    t5.eval(), clip.eval()
    t5_vec, clip_vec = encode(t5, clip, t5_tok, clip_tok, [s.text for s in samples], text_cfg)
    labels = torch.tensor([s.labels for s in samples])
    result = {}
    for encoder, vec, heads in (("t5", t5_vec, heads_t5), ("clip", clip_vec, heads_clip)):
        for i, (name, logit) in enumerate(zip(ATTRIBUTES, heads(vec))):
            said = labels[:, i] != UNSPECIFIED
            if said.any():
                result[f"{encoder}_{name}"] = (logit[said].argmax(1) == labels[said, i]).float().mean().item()
    t5.train(), clip.train()
    return result


# --------------------------------------------------------------------------- loop


def train_text_encoders(cfg: TextTrainConfig, out_dir: Path, work_dir: Path | None = None) -> dict:
    """Fit the tokenizer, train both encoders, save `out_dir/t5/` and `out_dir/clip/`."""
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    started = time.perf_counter()
    base = train_word_tokenizer(tokenizer_corpus(cfg, cfg.seed + 7))
    t5_tok = styled_tokenizer(base, "t5", cfg.text.t5_max_length)
    clip_tok = styled_tokenizer(base, "clip", cfg.text.clip_max_length)
    t5, clip = build_encoders(cfg, t5_tok, clip_tok)
    heads_t5, heads_clip = AttributeHeads(cfg.width), AttributeHeads(cfg.width)
    params = [*t5.parameters(), *clip.parameters(), *heads_t5.parameters(), *heads_clip.parameters()]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)

    train = make_samples(cfg, cfg.num_captions, cfg.seed, held_out=False)
    held = make_samples(cfg, cfg.eval_captions, cfg.seed + 1, held_out=True)
    rng = np.random.default_rng(cfg.seed)
    t5.train(), clip.train()
    for step in range(cfg.steps):
        lr = cfg.lr * min(1.0, (step + 1) / cfg.warmup_steps) * 0.5 * (1 + np.cos(np.pi * step / cfg.steps))
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = [train[i] for i in rng.integers(len(train), size=cfg.batch_size)]
        t5_vec, clip_vec = encode(t5, clip, t5_tok, clip_tok, [s.text for s in batch], cfg.text)
        labels = torch.tensor([s.labels for s in batch])
        loss = attribute_loss(heads_t5(t5_vec), labels) + attribute_loss(heads_clip(clip_vec), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        if (step + 1) % 50 == 0 or step + 1 == cfg.steps:
            log.info("step %d/%d loss %.4f lr %.2e", step + 1, cfg.steps, loss.item(), lr)

    train_acc = accuracy(t5, clip, t5_tok, clip_tok, heads_t5, heads_clip, train[:500], cfg.text)
    held_acc = accuracy(t5, clip, t5_tok, clip_tok, heads_t5, heads_clip, held, cfg.text)
    out_dir = Path(out_dir)
    for name, model, tokenizer in (("t5", t5, t5_tok), ("clip", clip, clip_tok)):
        model.eval().save_pretrained(out_dir / name)  # safetensors
        tokenizer.save_pretrained(out_dir / name)
    summary = {"steps": cfg.steps, "seconds": round(time.perf_counter() - started, 1), "vocab_size": len(t5_tok),
               "train_accuracy": train_acc, "held_out_accuracy": held_acc,
               "config": asdict(cfg)}
    if work_dir is not None:
        Path(work_dir).mkdir(parents=True, exist_ok=True)
        (Path(work_dir) / "summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    return summary
