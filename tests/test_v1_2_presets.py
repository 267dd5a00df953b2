"""The draft Open-Sora 1.2 presets: official architecture, resolutions, aspect-ratio names, lengths."""

import json
import tomllib

import pytest

from conftest import REPO
from opensora.models.stdit3 import STDiT3Config
from opensora.models.stdit3 import official_key_shapes as stdit3_keys
from opensora.models.vae_v1_2 import VAEV12Config, check_num_frames
from opensora.models.vae_v1_2 import official_key_shapes as vae_keys
from opensora.presets import available_presets, load_preset

FIXTURES = REPO / "tests" / "fixtures" / "opensora_v1_2"
SAMPLER = json.loads((FIXTURES / "sampler_tiny.json").read_text())
NAMES = ("opensora-v1-2", "tiny-random-v1-2")


def _preset_file(name: str):
    """The draft until the preset loader learns `family` and it is renamed to NAME.toml."""
    final = REPO / "presets" / f"{name}.toml"
    return final if final.exists() else REPO / "presets" / f"{name}.toml.draft"


DRAFTS = {name: tomllib.loads(_preset_file(name).read_text()) for name in NAMES}
OFFICIAL = DRAFTS["opensora-v1-2"]


def _listed(name: str) -> dict:
    return {e["name"]: tuple(e["shape"]) for e in json.loads((FIXTURES / name).read_text())["keys"]}


def test_the_official_draft_describes_the_released_checkpoints():
    assert stdit3_keys(STDiT3Config(**OFFICIAL["stdit3"])) == _listed("stdit3_keys.json")
    assert vae_keys(VAEV12Config(**OFFICIAL["vae"])) == _listed("vae_v1_2_keys.json")
    assert OFFICIAL["text"]["t5_max_length"] == OFFICIAL["stdit3"]["model_max_length"] == 300
    assert OFFICIAL["files"]["t5"] == load_preset("opensora-v2-256px").files.t5  # the T5 folder 2.0 uses


def test_buckets_are_the_official_sizes_under_width_height_names():
    official_names = OFFICIAL["official_aspect_ratio"]
    compared = 0
    for key, (height, width) in SAMPLER["image_size_examples"].items():
        resolution, official = key.split()
        if resolution not in OFFICIAL["buckets"]:
            continue
        ours = next(name for name, theirs in official_names.items() if theirs == official)
        assert OFFICIAL["buckets"][resolution][ours] == [height, width], key
        compared += 1
    assert compared == 20 and sorted(OFFICIAL["buckets"]) == ["240p", "360p", "480p", "720p"]


@pytest.mark.parametrize("name", sorted(DRAFTS))
def test_16_9_means_landscape_as_in_the_2_0_presets(name):
    v2 = load_preset("opensora-v2-256px").image_size("256px", "16:9")
    assert v2[1] > v2[0]
    for table in DRAFTS[name]["buckets"].values():
        height, width = table["16:9"]
        assert width > height
        assert table["9:16"] == [width, height]


def test_lengths_are_the_official_names_and_every_default_is_an_accepted_count():
    assert OFFICIAL["lengths"] == {k: v for k, v in SAMPLER["num_frames_map"].items() if k.endswith("s") and v <= 408}
    for preset in DRAFTS.values():
        sampler = preset["sampler"]
        for frames in [*preset["lengths"].values(), sampler["num_frames"]]:
            assert check_num_frames(frames, sampler["max_frames"]) == frames
        assert sampler["resolution"] in preset["buckets"]
        assert sampler["aspect_ratio"] in preset["buckets"][sampler["resolution"]]


def test_presets_name_their_family_and_drafts_stay_out_of_the_loader():
    for name, preset in DRAFTS.items():
        assert preset["family"] == "opensora-v1.2" and preset["name"] == name
        assert (name in available_presets()) == (_preset_file(name).suffix == ".toml")
