"""Files a user brings that look right and are not (issues #27 and #29): 0-byte or cut-short
checkpoints, a LoRA of another preset, and the README's example data for the fine-tune defaults."""

import csv
import re

import pytest
import torch
from safetensors.torch import save_file

from app.presets_info import availability, banner_markdown, startup_preset
from app.training_runs import config_for_preset, lora_choices, training_configs
from opensora.checkpoints import file_status
from opensora.cli import main as opensora_main
from opensora.errors import UserError
from opensora.lora import check_lora_fits, read_lora_file, write_lora_file
from opensora.presets import load_preset
from training.cli import main as training_main
from training.config import bucket_config_path, load_train_config, preset_bucket_table
from training.video_dataset import make_dataloader

OFFICIAL_FILES = ("Open_Sora_v2.safetensors", "hunyuan_vae.safetensors")
ENCODER_FOLDERS = ("google/t5-v1_1-xxl", "openai/clip-vit-large-patch14")


def zero_byte_official_folder(root):
    for name in OFFICIAL_FILES:
        (root / name).write_bytes(b"")
    for folder in ENCODER_FOLDERS:
        (root / folder).mkdir(parents=True)
        (root / folder / "config.json").write_text("")
    return root


def test_check_does_not_call_zero_byte_files_ready_and_exits_0_on_the_demo(tmp_path, capsys):
    """#27.9 and #29 (check): 0-byte official files and empty config.json are named as broken with
    the reason; without --preset the exit is 0 with a "using demo" line, with the official preset 1."""
    ckpt = zero_byte_official_folder(tmp_path)
    assert opensora_main(["check", "--ckpt-dir", str(ckpt)]) == 0
    out = capsys.readouterr().out
    assert "opensora-v2-256px: ready" not in out and "opensora-v2-256px: 4 broken" in out
    assert re.search(rf"\[BROKEN\] mmdit +{re.escape(str(ckpt / 'Open_Sora_v2.safetensors'))}: 0 bytes\n", out)
    assert re.search(rf"\[BROKEN\] t5 +{re.escape(str(ckpt / 'google/t5-v1_1-xxl'))}: config.json is empty or not JSON\n", out)
    assert out.strip().splitlines()[-1].startswith("using demo: the official files are missing or broken")
    assert opensora_main(["check", "--ckpt-dir", str(ckpt), "--preset", "opensora-v2-256px"]) == 1
    assert opensora_main(["check", "--ckpt-dir", str(ckpt), "--preset", "demo"]) == 0


def test_only_the_official_files_missing_is_exit_0_using_demo(tmp_path, capsys):
    """#29 (check): a fresh clone (no ckpts at all) is fine: exit 0 and says which model it uses."""
    assert opensora_main(["check", "--ckpt-dir", str(tmp_path / "none")]) == 0
    assert "using demo:" in capsys.readouterr().out


def test_truncated_safetensors_is_not_ready(tmp_path):
    """#27.9: a download cut short keeps a readable header; its size gives it away."""
    path = tmp_path / "hunyuan_vae.safetensors"
    save_file({"w": torch.zeros(64, 64)}, str(path))
    ok = [s for s in file_status(load_preset("opensora-v2-256px"), tmp_path) if s.role == "vae"][0]
    assert ok.ready
    path.write_bytes(path.read_bytes()[:-100])
    status = [s for s in file_status(load_preset("opensora-v2-256px"), tmp_path) if s.role == "vae"][0]
    assert status.present and not status.ready and "truncated" in status.problem


def test_broken_official_folder_falls_back_to_demo_with_a_banner_saying_why(tmp_path):
    """#27.9: the app starts on the demo preset, the official presets are not offered, and the
    banner names the broken files and what is wrong with them."""
    ckpt = zero_byte_official_folder(tmp_path)
    assert startup_preset(None, ckpt) == "demo"
    info = availability(ckpt)
    assert "opensora-v2-256px" not in info.selectable and "demo" in info.selectable
    banner = banner_markdown("demo", ckpt)
    assert "cannot be used" in banner and "`Open_Sora_v2.safetensors`: 0 bytes" in banner
    assert "config.json is empty or not JSON" in banner


def tiny_lora(path, preset: str, in_features: int):
    pairs = {"blocks.0.to_q": (torch.zeros(2, in_features), torch.zeros(8, 2)),
             "blocks.1.to_q": (torch.zeros(2, in_features), torch.zeros(8, 2))}
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_lora_file(path, pairs, 2, 2.0, ["to_q"], preset)


def test_lora_picker_filters_by_the_preset_recorded_in_the_file(tmp_path):
    """#29.12: the picker of a preset lists only LoRAs made for it (the file's metadata decides);
    a LoRA kept from a sidecar stays; without `preset` every LoRA is listed as before."""
    runs = tmp_path / "runs"
    demo = tiny_lora(runs / "shapes" / "lora.safetensors", "demo", 4)
    tiny = tiny_lora(runs / "noise" / "lora.safetensors", "tiny-random", 4)
    assert lora_choices(runs, preset="demo") == [("none", ""), ("shapes (demo)", str(demo.resolve()))]
    assert [label for label, _ in lora_choices(runs, preset="tiny-random")] == ["none", "noise (tiny-random)"]
    assert len(lora_choices(runs)) == 3
    assert str(tiny.resolve()) in dict(lora_choices(runs, keep=str(tiny.resolve()), preset="demo")).values()


def test_lora_of_another_preset_is_a_one_line_error(tmp_path):
    """#29.12: not a wall of module shapes: one line naming both presets and what to do."""
    model = torch.nn.Module()
    model.blocks = torch.nn.ModuleList([torch.nn.Module(), torch.nn.Module()])
    for block in model.blocks:
        block.to_q = torch.nn.Linear(16, 8)
    lora = read_lora_file(tiny_lora(tmp_path / "l.safetensors", "demo", 4))
    with pytest.raises(UserError) as err:
        check_lora_fits(lora, model, "tiny-random")
    message = str(err.value)
    assert "\n" not in message and "made for preset demo" in message and "does not fit preset tiny-random" in message
    assert "2 of 2 adapted layers" in message and "switch the preset to demo" in message


def test_render_shapes_num_16_writes_16_samples(tmp_path):
    """#29.2: `--num 16` writes 16 samples (was 17: an extra image the video buckets skip)."""
    assert training_main(["render-shapes", "--out", str(tmp_path), "--num", "16", "--frames", "9"]) == 0
    with open(tmp_path / "data.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 16 and all(r["num_frames"] == "9" for r in rows)


@pytest.fixture(scope="module")
def readme_data(tmp_path_factory):
    """The README's example data line: render-shapes --out data/shapes --num 16 --frames 9."""
    out = tmp_path_factory.mktemp("readme") / "shapes"
    assert training_main(["render-shapes", "--out", str(out), "--num", "16", "--frames", "9"]) == 0
    return out / "data.csv"


def test_tab_defaults_are_a_lora_finetune_that_the_readme_data_fills(readme_data, tmp_path):
    """#29.1 / #29.2: for every preset a fresh clone can select, the settings the fine-tune tab
    picks are a LoRA fine-tune of the preset's weights, and their bucket table (the preset's own
    unless the settings name one) makes batches from the README's example data."""
    configs = training_configs()
    for preset in availability(tmp_path).selectable:
        name = config_for_preset(preset, configs)
        defaults = configs[name]
        assert (defaults.mode, defaults.init) == ("lora", "preset"), (preset, name)
        assert "LoRA fine-tune" in defaults.label(name)
        config = load_train_config(name)
        p = load_preset(preset)
        buckets = config.buckets or preset_bucket_table(p.name, p.sampler.resolution)
        loader = make_dataloader(readme_data, bucket_config_path(buckets))
        assert loader.summary.num_usable == 16 and len(loader) >= 4, (preset, name, loader.summary.describe())
    assert configs["demo"].init == "random" and "from scratch" in configs["demo"].label("demo")


def test_bucket_table_follows_the_preset_unless_chosen():
    """#29.2: train-default.toml names no table: each preset trains on its own."""
    assert load_train_config("default").buckets == ""
    assert preset_bucket_table("tiny-random", "tiny") == "tiny"
    assert preset_bucket_table("opensora-v2-256px", "256px") == "256px"
    assert preset_bucket_table("demo", "128px") == "demo"
    with pytest.raises(UserError, match="has no bucket table.*pass --buckets"):
        preset_bucket_table("opensora-v2-768px", "768px")
    assert load_train_config("tiny").buckets == "tiny"
