"""Open-Sora 1.2 sampling: mask-strategy grammar and errors, the app's cond types, score prompts,
the masked T5, and a tiny random end-to-end run (tensors in, decodable frames out)."""

import threading
import tomllib

import pytest
import torch

from conftest import REPO
from opensora.errors import UserError
from opensora.models.stdit3 import STDiT3Config, build_stdit3
from opensora.models.text_encoders import T5MaskedEncoder, TextConfig
from opensora.models.vae_v1_2 import VAEV12Config, build_vae_v1_2, latent_frames
from opensora.sampling.denoise import GenerationCancelled
from opensora.sampling.mask_strategy import (
    apply_mask_strategy, cond_type_strategy, parse_mask_strategy, place, reference_spec_v1_2, resolve_strategy,
)
from opensora.sampling.prompt_v1_2 import t5_prompt
from opensora.sampling.rflow_v1_2 import RFlowSettings, sample_v1_2

_TINY_FILE = REPO / "presets" / "tiny-random-v1-2.toml"  # the .draft until the preset loader knows `family`
TINY = tomllib.loads((_TINY_FILE if _TINY_FILE.exists() else _TINY_FILE.with_suffix(".toml.draft")).read_text())


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors on a shared CPU: one thread is ~10x faster than two."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny():
    """Model, VAE and T5 of the tiny-random-v1-2 draft preset, random weights from fixed seeds."""
    torch.manual_seed(TINY["seed"])
    model = build_stdit3(STDiT3Config(**TINY["stdit3"])).eval()
    vae = build_vae_v1_2(VAEV12Config(**TINY["vae"])).eval()
    text = TINY["text"]
    t5 = T5MaskedEncoder.random(
        model.config.caption_channels, text["t5_max_length"],
        TextConfig(t5_layers=text["t5_layers"], t5_heads=text["t5_heads"], t5_ff=text["t5_ff"]), TINY["seed"],
    )
    return model, vae, t5


def _targets(strategy: str, latent_t: int, ref_frames: list[int], align=5) -> dict[int, tuple[int, int]]:
    """{target latent frame: (reference index, reference frame)}."""
    return {
        p.target_start + k: (p.ref_index, p.ref_start + k)
        for p in place(parse_mask_strategy(strategy), latent_t, ref_frames, 0, align) for k in range(p.length)
    }


# --- grammar -------------------------------------------------------------------------------------

@pytest.mark.parametrize("strategy, fragment", [
    ("0,0,x", "ref_start 'x' must be an integer"),
    ("0,0,0,0,1,0.5,3", "must be 1 to 6 comma-separated numbers"),
    ("0;;0", "group '' must be 1 to 6"),
    ("0,0,0,0,1,1.5", "edit_ratio 1.5 must be in 0..1"),
    ("0,0,0,0,0", "length >= 1"),
    ("0,0,0,0,1,half", "edit_ratio 'half' must be a number"),
])
def test_malformed_strategies_name_the_bad_field(strategy, fragment):
    with pytest.raises(UserError, match=fragment.replace("(", "\\(")):
        parse_mask_strategy(strategy)


def test_placement_errors_name_the_reference_and_the_range():
    with pytest.raises(UserError, match=r"uses reference 1 but 1 reference\(s\) were given \(allowed ref_index: 0..0\)"):
        place(parse_mask_strategy("0;0,1,0,-1,1"), 10, [1])
    with pytest.raises(UserError, match="writes no frame: target start 20 of 10 latent frames"):
        place(parse_mask_strategy("0,0,0,20,1"), 10, [1], align=None)


def test_official_alignment_snaps_the_tail_image_of_a_10_frame_latent_to_frame_5():
    assert _targets("0;0,1,0,-1,1", 10, [1, 1]) == {0: (0, 0), 5: (1, 0)}
    assert _targets("0;0,1,0,-1,1", 10, [1, 1], align=None) == {0: (0, 0), 9: (1, 0)}


# --- the app's cond types --------------------------------------------------------------------------

def test_cond_types_map_onto_strategies_that_mean_the_same():
    t = latent_frames(35)  # 17k+1 frames: the last latent frame is a chunk start, so align 5 keeps it
    assert t == 11
    assert _targets(cond_type_strategy("i2v_head"), t, [1]) == {0: (0, 0)}
    assert _targets(cond_type_strategy("i2v_tail"), t, [1]) == {10: (0, 0)}
    assert _targets(cond_type_strategy("i2v_loop", 2), t, [1, 1]) == {0: (0, 0), 10: (1, 0)}
    assert _targets(cond_type_strategy("i2v_loop", 1), t, [1]) == {0: (0, 0), 10: (0, 0)}
    assert cond_type_strategy("t2v") == ""
    ref = latent_frames(17)  # the 17 pixel frames reference_spec_v1_2 reads for v2v
    assert reference_spec_v1_2("v2v_tail").frames == 17 and reference_spec_v1_2("v2v_tail").which == "last"
    assert _targets(cond_type_strategy("v2v_head"), latent_frames(51), [ref]) == {k: (0, k) for k in range(5)}
    assert _targets(cond_type_strategy("v2v_tail"), latent_frames(51), [ref]) == {10 + k: (0, k) for k in range(5)}


def test_cond_type_errors_and_raw_strategies():
    with pytest.raises(UserError, match="cond type 'v2v_head_easy' has no Open-Sora 1.2 equivalent; allowed: t2v, i2v_head"):
        cond_type_strategy("v2v_head_easy")
    with pytest.raises(UserError, match="i2v_head needs a reference"):
        cond_type_strategy("i2v_head", 0)
    assert resolve_strategy("i2v_head", "0,0,-5,0,5", 1) == "0,0,-5,0,5"  # a raw strategy wins
    assert resolve_strategy(None, None, 0) == ""
    with pytest.raises(UserError, match="ref_start 'a' must be an integer"):
        resolve_strategy("t2v", "0,0,a", 0)


# --- prompts and text ------------------------------------------------------------------------------

def test_score_conditioning_in_the_official_format():
    assert t5_prompt("A car driving on the ocean.", 6.5, 4.0, "pan right") == (
        "a car driving on the ocean. aesthetic score: 6.5. motion score: 4.0. camera motion: pan right."
    )
    assert t5_prompt("A dog. aesthetic score: 5.0.", 6.5) == "a dog. aesthetic score: 5.0."  # already present
    with pytest.raises(UserError, match="camera motion 'sideways' is not one of: pan right"):
        t5_prompt("a cat", camera_motion="sideways")
    with pytest.raises(UserError, match="aesthetic score 11.0 must be a number in 0..10"):
        t5_prompt("a cat", aes=11.0)


def test_masked_t5_and_stdit3_ignore_padding(tiny):
    model, _, t5 = tiny
    y, mask = t5.encode([t5_prompt("a cat"), t5_prompt("a lighthouse on a rocky cliff at sunset")])
    assert y.shape == (2, 1, 32, 24) and mask.dtype == torch.int64
    assert mask[0].sum() < mask[1].sum() <= 32 and mask[0, 0] == 1 and mask[0, -1] == 0
    x, t = torch.randn(2, 4, 2, 2, 4), torch.tensor([500.0, 500.0])
    size = dict(fps=torch.tensor([24.0]), height=torch.tensor([32.0]), width=torch.tensor([64.0]))
    with torch.no_grad():
        out = model(x, t, y, mask, **size)
        padded = y.clone()
        padded[mask[:, None, :, None].expand_as(y) == 0] = 1e3
        assert torch.equal(model(x, t, padded, mask, **size), out)
        assert not torch.equal(model(x, t, y, None, **size), out)  # without the mask padding counts


# --- the sampler -----------------------------------------------------------------------------------

def test_tiny_i2v_head_run_keeps_the_image_and_decodes_34_frames(tiny):
    model, vae, t5 = tiny
    height, width = TINY["buckets"]["tiny"]["16:9"]
    settings = RFlowSettings(height=height, width=width, num_frames=34, num_steps=TINY["sampler"]["num_steps"])
    y, mask = t5.encode([t5_prompt("a cat", flow=4.0)])
    image = torch.rand(1, 3, 1, height, width) * 2 - 1
    steps = []
    with torch.no_grad():
        ref = vae.encode(image, generator=torch.Generator().manual_seed(1))[0]
        noise = torch.randn(1, 4, latent_frames(34), height // 8, width // 8, generator=torch.Generator().manual_seed(2))
        latent = sample_v1_2(model, y, mask, noise, [[ref]], [cond_type_strategy("i2v_head")], settings,
                             generator=torch.Generator().manual_seed(3), callback=lambda i, n, z: steps.append(i))
        video = vae.decode(latent, 34)
    assert latent.shape == noise.shape and steps == list(range(settings.num_steps))
    assert torch.equal(latent[0, :, 0], ref[:, 0])  # the conditioning frame comes back unchanged
    assert not torch.allclose(latent[0, :, 1:], noise[0, :, 1:])
    assert video.shape == (1, 3, 34, height, width) and torch.isfinite(video).all()


def test_edit_ratio_renoises_the_reference_and_zero_keeps_it(tiny):
    model, _, t5 = tiny
    settings = RFlowSettings(height=32, width=64, num_frames=17, num_steps=4)
    y, mask = t5.encode(["a cat"])
    noise, ref = torch.randn(1, 4, 5, 4, 8), torch.randn(4, 5, 4, 8)
    with torch.no_grad():
        kept = sample_v1_2(model, y, mask, noise, [[ref]], ["0,0,0,0,5,0.0"], settings)
        edited = sample_v1_2(model, y, mask, noise, [[ref]], ["0,0,0,0,5,0.5"], settings,
                             generator=torch.Generator().manual_seed(0))
    assert torch.equal(kept[0], ref)
    assert not torch.allclose(edited[0], ref)


def test_masks_written_into_the_noise_copy_only():
    noise, ref = torch.zeros(1, 4, 10, 2, 2), torch.ones(4, 1, 2, 2)
    z, masks = apply_mask_strategy(noise, [[ref, ref]], ["0;0,1,0,-1,1"])
    assert noise.abs().sum() == 0
    assert masks.tolist() == [[0.0, 1, 1, 1, 1, 0, 1, 1, 1, 1]]
    assert z[0, :, 0].eq(1).all() and z[0, :, 5].eq(1).all() and z[0, :, 1].eq(0).all()


def test_sampler_refuses_lengths_with_a_nan_schedule_and_can_be_cancelled(tiny):
    model, _, t5 = tiny
    y, mask = t5.encode(["a cat"])
    with pytest.raises(UserError, match="num_frames 16 is not supported"):
        sample_v1_2(model, y, mask, torch.randn(1, 4, 4, 4, 8), [[]], [""], RFlowSettings(32, 64, 16))
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(GenerationCancelled, match="before step 1 of 4"):
        sample_v1_2(model, y, mask, torch.randn(1, 4, 5, 4, 8), [[]], [""], RFlowSettings(32, 64, 17, num_steps=4),
                    cancel_event=cancel)
