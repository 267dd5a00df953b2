"""T5 + CLIP text conditioning through transformers, fed exactly as the official conditioner does.

T5: `last_hidden_state` of `max_length` tokens padded with "max_length" and no attention mask
(pad positions attend like any other token). CLIP: `pooler_output` (the final-layer-normed state
at the first end-of-text token), no projection.
"""

from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from torch import nn
from transformers import (
    AutoTokenizer,
    CLIPTextConfig,
    CLIPTextModel,
    PreTrainedTokenizerFast,
    T5Config,
    T5EncoderModel,
)


@dataclass
class TextConfig:
    t5_max_length: int = 512
    clip_max_length: int = 77
    # Only used to build random-weight encoders (tiny-random preset): T5 width = MMDiT context_in_dim,
    # CLIP width = MMDiT vec_in_dim.
    t5_layers: int = 2
    t5_heads: int = 2
    t5_ff: int = 64
    clip_layers: int = 2
    clip_heads: int = 2
    clip_ff: int = 64


SPECIAL_TOKENS = ["<pad>", "</s>", "<unk>", "<s>"]


def byte_tokenizer(style: str) -> PreTrainedTokenizerFast:
    """A byte-level tokenizer built in code (no download) for random-weight encoders.

    style "t5": text then </s>, padded with <pad>; style "clip": <s> text </s>, padded with </s>
    (CLIP pads with its end-of-text token).
    """
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    vocab.update({char: len(SPECIAL_TOKENS) + i for i, char in enumerate(sorted(alphabet))})
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    if style == "t5":
        tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
        pad = "<pad>"
    else:
        tokenizer.post_processor = processors.TemplateProcessing(
            single="<s> $A </s>", special_tokens=[("<s>", 3), ("</s>", 1)]
        )
        pad = "</s>"
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token=pad, eos_token="</s>", unk_token="<unk>", bos_token="<s>"
    )


class TextConditioner(nn.Module):
    """encode(texts) -> (txt (n, t5_max_length, D_t5), y_vec (n, D_clip))."""

    def __init__(self, t5, t5_tokenizer, clip, clip_tokenizer, config: TextConfig):
        super().__init__()
        self.t5, self.clip = t5.eval(), clip.eval()
        self.t5_tokenizer, self.clip_tokenizer = t5_tokenizer, clip_tokenizer
        self.config = config

    @classmethod
    def from_pretrained(cls, t5_dir: Path, clip_dir: Path, config: TextConfig, dtype=torch.float32, device="cpu"):
        t5 = T5EncoderModel.from_pretrained(t5_dir, torch_dtype=dtype).to(device)
        clip = CLIPTextModel.from_pretrained(clip_dir, torch_dtype=dtype).to(device)
        return cls(t5, AutoTokenizer.from_pretrained(t5_dir), clip, AutoTokenizer.from_pretrained(clip_dir), config)

    @classmethod
    def random(cls, config: TextConfig, t5_width: int, clip_width: int, seed: int):
        """Random weights from a fixed seed and byte tokenizers: runs anywhere, knows nothing."""
        t5_tok, clip_tok = byte_tokenizer("t5"), byte_tokenizer("clip")
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            t5 = T5EncoderModel(
                T5Config(
                    vocab_size=len(t5_tok), d_model=t5_width, d_kv=t5_width // config.t5_heads,
                    d_ff=config.t5_ff, num_layers=config.t5_layers, num_heads=config.t5_heads,
                    pad_token_id=t5_tok.pad_token_id, eos_token_id=t5_tok.eos_token_id,
                )
            )
            clip = CLIPTextModel(
                CLIPTextConfig(
                    vocab_size=len(clip_tok), hidden_size=clip_width, intermediate_size=config.clip_ff,
                    num_hidden_layers=config.clip_layers, num_attention_heads=config.clip_heads,
                    max_position_embeddings=config.clip_max_length, pad_token_id=clip_tok.pad_token_id,
                    bos_token_id=clip_tok.bos_token_id, eos_token_id=clip_tok.eos_token_id,
                )
            )
        return cls(t5, t5_tok, clip, clip_tok, config)

    def _ids(self, tokenizer, texts: list[str], max_length: int) -> torch.Tensor:
        batch = tokenizer(
            texts, truncation=True, max_length=max_length, padding="max_length", return_tensors="pt"
        )
        return batch["input_ids"]

    @torch.no_grad()
    def encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        device = next(self.t5.parameters()).device
        t5_ids = self._ids(self.t5_tokenizer, texts, self.config.t5_max_length).to(device)
        txt = self.t5(input_ids=t5_ids, attention_mask=None).last_hidden_state
        clip_ids = self._ids(self.clip_tokenizer, texts, self.config.clip_max_length).to(device)
        y_vec = self.clip(input_ids=clip_ids, attention_mask=None).pooler_output
        return txt, y_vec
