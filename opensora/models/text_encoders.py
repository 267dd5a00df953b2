"""T5 + CLIP text conditioning through transformers, fed exactly as the official conditioner does.

T5: `last_hidden_state` of `max_length` tokens padded with "max_length" and no attention mask
(pad positions attend like any other token). CLIP: `pooler_output` (the final-layer-normed state
at the first end-of-text token), no projection.

T5 can load in 8-bit or 4-bit (bitsandbytes through transformers' `BitsAndBytesConfig`): T5-XXL is
9.5 GB in bf16, CLIP-L 0.25 GB, so only T5 is quantised. Weights are read from safetensors only.
"""

from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from torch import nn
from transformers import (
    AutoTokenizer,
    BitsAndBytesConfig,
    CLIPTextConfig,
    CLIPTextModel,
    PreTrainedTokenizerFast,
    T5Config,
    T5EncoderModel,
)

from opensora.configs import TextConfig  # noqa: F401 - the model's config lives with the presets
from opensora.errors import UserError


SPECIAL_TOKENS = ["<pad>", "</s>", "<unk>", "<s>"]
TEXT_ENCODER_QUANTS = ("int8", "nf4")
BITSANDBYTES_PIN = "bitsandbytes==0.50.2"


def check_text_encoder_quant(quant: str | None) -> str | None:
    if quant not in (None, *TEXT_ENCODER_QUANTS):
        raise UserError(f"unknown text encoder quantisation {quant!r}; allowed: none, {', '.join(TEXT_ENCODER_QUANTS)}")
    return quant


def quantization_config(quant: str, compute_dtype: torch.dtype) -> BitsAndBytesConfig:
    """int8: LLM.int8() linear layers; nf4: 4-bit NormalFloat with `compute_dtype` matmuls."""
    if quant == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute_dtype)


def require_safetensors(folder: Path) -> None:
    """Refuse a model folder without safetensors weights: a pickled `.bin` can run code when loaded."""
    folder = Path(folder)
    if not folder.is_dir() or any(folder.glob("*.safetensors")):
        return  # a missing folder is reported by the loader with its own message
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt"))
    found = f"it holds only {', '.join(pickles)} (pickle files, never loaded: they can run code)" if pickles else "it has none"
    raise UserError(
        f"{folder} needs its weights as .safetensors (e.g. model.safetensors); {found}. "
        "Download the safetensors files of the official model (huggingface-cli download ... --include '*.safetensors')"
    )


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


def random_t5(tokenizer, width: int, config: TextConfig) -> T5EncoderModel:
    """A T5 encoder of `width` with the config's tiny depth, drawn from the current RNG."""
    return T5EncoderModel(
        T5Config(
            vocab_size=len(tokenizer), d_model=width, d_kv=width // config.t5_heads,
            d_ff=config.t5_ff, num_layers=config.t5_layers, num_heads=config.t5_heads,
            pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        )
    )


class TextConditioner(nn.Module):
    """encode(texts) -> (txt (n, t5_max_length, D_t5), y_vec (n, D_clip))."""

    def __init__(self, t5, t5_tokenizer, clip, clip_tokenizer, config: TextConfig):
        super().__init__()
        self.t5, self.clip = t5.eval(), clip.eval()
        self.t5_tokenizer, self.clip_tokenizer = t5_tokenizer, clip_tokenizer
        self.config = config

    @classmethod
    def from_pretrained(
        cls, t5_dir: Path, clip_dir: Path, config: TextConfig, dtype=torch.float32, device="cpu", quant: str | None = None
    ):
        """quant: None (T5 in `dtype`), "int8" or "nf4" (T5's linear layers in bitsandbytes 8 / 4 bit)."""
        check_text_encoder_quant(quant)
        for folder in (t5_dir, clip_dir):
            require_safetensors(folder)
        if quant is None:
            t5 = T5EncoderModel.from_pretrained(t5_dir, dtype=dtype, use_safetensors=True).to(device)
        else:
            t5 = cls._quantized_t5(t5_dir, quant, dtype, device)
        clip = CLIPTextModel.from_pretrained(clip_dir, dtype=dtype, use_safetensors=True).to(device)
        return cls(t5, AutoTokenizer.from_pretrained(t5_dir), clip, AutoTokenizer.from_pretrained(clip_dir), config)

    @staticmethod
    def _quantized_t5(t5_dir: Path, quant: str, dtype: torch.dtype, device) -> T5EncoderModel:
        try:
            import bitsandbytes  # noqa: F401  (transformers needs it; say how to get it)
        except ImportError:
            raise UserError(f"--text-encoder-quant {quant} needs bitsandbytes: pip install {BITSANDBYTES_PIN}") from None
        # Quantised weights are placed where they are made: no .to(device) afterwards.
        return T5EncoderModel.from_pretrained(
            t5_dir, dtype=dtype, use_safetensors=True, quantization_config=quantization_config(quant, dtype),
            device_map={"": torch.device(device)},
        )

    @classmethod
    def random(cls, config: TextConfig, t5_width: int, clip_width: int, seed: int):
        """Random weights from a fixed seed and byte tokenizers: runs anywhere, knows nothing."""
        t5_tok, clip_tok = byte_tokenizer("t5"), byte_tokenizer("clip")
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            t5 = random_t5(t5_tok, t5_width, config)
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

    @torch.no_grad()
    def encode_t5_masked(self, texts: list[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Open-Sora 1.2's T5 call on this conditioner's T5 (shared with 2.0): see `t5_masked_states`."""
        return t5_masked_states(self.t5, self.t5_tokenizer, texts, max_length)


@torch.no_grad()
def t5_masked_states(t5, tokenizer, texts: list[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Open-Sora 1.2 text conditioning: T5 **with** the attention mask (unlike 2.0).

    Returns y (n, 1, max_length, D), the caption states as STDiT3 takes them, and mask
    (n, max_length) int64 (1 = token, 0 = padding; STDiT3 attends only to the 1s)."""
    device = next(t5.parameters()).device
    batch = tokenizer(texts, truncation=True, max_length=max_length, padding="max_length", return_tensors="pt")
    ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
    states = t5(input_ids=ids, attention_mask=mask).last_hidden_state
    return states[:, None], mask


class T5MaskedEncoder(nn.Module):
    """T5 alone, for Open-Sora 1.2 (300 tokens): encode(texts) -> (y (n,1,L,D), mask (n,L))."""

    def __init__(self, t5, tokenizer, max_length: int = 300):
        super().__init__()
        self.t5, self.tokenizer, self.max_length = t5.eval(), tokenizer, max_length

    @classmethod
    def from_pretrained(
        cls, t5_dir: Path, max_length: int = 300, dtype=torch.float32, device="cpu", quant: str | None = None
    ):
        """quant as TextConditioner.from_pretrained: None, "int8" or "nf4"; safetensors only."""
        check_text_encoder_quant(quant)
        require_safetensors(t5_dir)
        if quant is None:
            t5 = T5EncoderModel.from_pretrained(t5_dir, dtype=dtype, use_safetensors=True).to(device)
        else:
            t5 = TextConditioner._quantized_t5(t5_dir, quant, dtype, device)
        return cls(t5, AutoTokenizer.from_pretrained(t5_dir), max_length)

    @classmethod
    def random(cls, width: int, max_length: int, config: TextConfig, seed: int):
        """Random weights from a fixed seed and the byte tokenizer (tiny presets)."""
        tokenizer = byte_tokenizer("t5")
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            t5 = random_t5(tokenizer, width, config)
        return cls(t5, tokenizer, max_length)

    def encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        return t5_masked_states(self.t5, self.tokenizer, texts, self.max_length)
