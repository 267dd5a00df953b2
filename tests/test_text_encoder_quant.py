"""T5 in 8-bit and 4-bit (bitsandbytes on the CPU): close to fp32, much smaller; .bin folders refused."""

import pytest
import torch
from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

from opensora.errors import UserError
from opensora.models.text_encoders import TextConditioner, TextConfig, byte_tokenizer

CONFIG = TextConfig(t5_max_length=32, clip_max_length=16)
PROMPTS = ["a red fox running through fresh snow", "", "a green triangle moving right"]


@pytest.fixture(scope="module")
def encoder_dirs(tmp_path_factory):
    """A T5 v1.1-shaped encoder (gated GELU, d_ff = 2.5 d_model) wide enough that its linear
    layers dominate, and a small CLIP, saved as safetensors folders with byte tokenizers."""
    root = tmp_path_factory.mktemp("encoders")
    t5_tok, clip_tok = byte_tokenizer("t5"), byte_tokenizer("clip")
    torch.manual_seed(0)
    t5 = T5EncoderModel(
        T5Config(
            vocab_size=len(t5_tok), d_model=512, d_kv=64, d_ff=1280, num_layers=4, num_heads=8,
            feed_forward_proj="gated-gelu", dropout_rate=0.0, pad_token_id=t5_tok.pad_token_id,
            eos_token_id=t5_tok.eos_token_id,
        )
    )
    clip = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(clip_tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=2, max_position_embeddings=16, pad_token_id=clip_tok.pad_token_id,
            bos_token_id=clip_tok.bos_token_id, eos_token_id=clip_tok.eos_token_id,
        )
    )
    for model, tokenizer, name in ((t5, t5_tok, "t5"), (clip, clip_tok, "clip")):
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
    return root / "t5", root / "clip"


@pytest.fixture(scope="module")
def fp32_encoder(encoder_dirs):
    return TextConditioner.from_pretrained(*encoder_dirs, CONFIG)


@pytest.mark.parametrize("quant, min_saving, min_cosine", [("int8", 0.40, 0.999), ("nf4", 0.60, 0.97)])
def test_quantised_t5_is_close_and_smaller(encoder_dirs, fp32_encoder, quant, min_saving, min_cosine):
    quantised = TextConditioner.from_pretrained(*encoder_dirs, CONFIG, quant=quant)
    kinds = {type(m).__name__ for m in quantised.t5.modules()}
    assert {"int8": "Linear8bitLt", "nf4": "Linear4bit"}[quant] in kinds

    txt_ref, y_ref = fp32_encoder.encode(PROMPTS)
    txt, y_vec = quantised.encode(PROMPTS)
    assert txt.shape == txt_ref.shape and torch.isfinite(txt).all()
    cosine = torch.nn.functional.cosine_similarity(txt.float().flatten(1), txt_ref.flatten(1), dim=1).min().item()
    assert torch.equal(y_vec, y_ref)  # CLIP stays in full precision

    full, small = fp32_encoder.t5.get_memory_footprint(), quantised.t5.get_memory_footprint()
    saving = 1 - small / full
    print(f"T5 {quant}: {full / 2**20:.1f} MiB -> {small / 2**20:.1f} MiB ({saving:.1%} less), min cosine {cosine:.5f}")
    assert saving >= min_saving
    assert cosine >= min_cosine


def test_folder_with_only_a_pickle_is_refused(tmp_path, encoder_dirs):
    pickled = tmp_path / "t5"
    pickled.mkdir()
    (pickled / "config.json").write_text((encoder_dirs[0] / "config.json").read_text())
    (pickled / "pytorch_model.bin").write_bytes(b"never unpickled")
    with pytest.raises(UserError, match=r"needs its weights as \.safetensors.*only pytorch_model\.bin \(pickle"):
        TextConditioner.from_pretrained(pickled, encoder_dirs[1], CONFIG)


def test_unknown_quantisation_is_refused(encoder_dirs):
    with pytest.raises(UserError, match="unknown text encoder quantisation 'int4'; allowed: none, int8, nf4"):
        TextConditioner.from_pretrained(*encoder_dirs, CONFIG, quant="int4")
