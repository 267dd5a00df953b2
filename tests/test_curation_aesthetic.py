"""Stage aesthetic: skipped with a notice (no column, no made-up score) without weights; with a
local folder (here a tiny random CLIP and head, safetensors only) every clip gets the head's
score of its normalised CLIP embedding; an incomplete folder is refused before any work."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from opensora.errors import UserError
from test_curation_media import write_scenes
from training.curation import aesthetic
from training.curation.aesthetic import AestheticConfig, check_weights, predictor, skip_reason
from training.curation.frames import decode_frames
from training.curation.runner import run_stage
from training.curation.table import read_csv


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    from transformers import CLIPImageProcessorPil, CLIPVisionConfig, CLIPVisionModelWithProjection

    root = tmp_path_factory.mktemp("aesthetic")
    torch.manual_seed(0)
    config = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              image_size=32, patch_size=8, projection_dim=16)
    CLIPVisionModelWithProjection(config).save_pretrained(root / "clip")
    CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(root / "clip")
    # The predictor's layout: linear layers 0, 2, 4 (dropout in between in the original), no activations.
    head = {"layers.0.weight": torch.randn(8, 16), "layers.0.bias": torch.randn(8),
            "layers.2.weight": torch.randn(4, 8), "layers.2.bias": torch.randn(4),
            "layers.4.weight": torch.randn(1, 4), "layers.4.bias": torch.tensor([5.0])}
    save_file(head, str(root / "head.safetensors"))
    return root, head


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("aesthetic-clips")
    for name, seed in (("one", 1), ("two", 2)):
        write_scenes(root / f"{name}.mp4", [12], seed=seed)
    listing = root / "clips.csv"
    listing.write_text("path,text,num_frames\n" + "".join(f"{root / n}.mp4,,12\n" for n in ("one", "two")))
    return listing


def test_without_weights_the_stage_is_skipped_and_writes_no_score(clips, tmp_path):
    config = AestheticConfig()
    notice = skip_reason(config)
    assert "no --aesthetic-weights" in notice
    summary = run_stage(aesthetic.STAGE, config, clips, tmp_path / "out.csv", skip=notice, progress=False)
    columns, rows = read_csv(tmp_path / "out.csv")
    assert "aesthetic" not in columns and len(rows) == 2
    assert summary.skipped == notice


def test_with_weights_each_clip_gets_the_heads_score(weights, clips, tmp_path):
    root, head = weights
    check_weights(str(root))
    config = AestheticConfig(weights_dir=str(root), frames=2)
    run_stage(aesthetic.STAGE, config, clips, tmp_path / "out.csv", progress=False)
    rows = read_csv(tmp_path / "out.csv")[1]
    scores = [float(r["aesthetic"]) for r in rows]
    assert scores[0] != scores[1]

    # The same number by hand: mean over the frames of head(CLIP embedding / its norm).
    model = predictor(str(root), 0)
    frames = list(decode_frames(rows[0], [3, 9]).values())
    with torch.inference_mode():
        pixels = model.processor(images=frames, return_tensors="pt")["pixel_values"]
        x = model.clip(pixel_values=pixels).image_embeds
        x = x / x.norm(dim=-1, keepdim=True)
        for i in (0, 2, 4):
            x = x @ head[f"layers.{i}.weight"].T + head[f"layers.{i}.bias"]
    assert scores[0] == pytest.approx(float(x.mean()), abs=1e-4)

    # The threshold between the two scores: a rerun's float noise (~1e-5) must not decide the row.
    between = sum(scores) / 2
    kept = run_stage(aesthetic.STAGE, AestheticConfig(weights_dir=str(root), frames=2, min_score=between),
                     clips, tmp_path / "kept.csv", progress=False)
    assert kept.dropped == {"low aesthetic score": 1} and kept.rows_out == 1


def test_an_incomplete_weights_folder_is_refused(tmp_path):
    (tmp_path / "clip").mkdir()
    with pytest.raises(UserError, match=r"incomplete; missing: .*head.safetensors.*config.json"):
        check_weights(str(tmp_path))
