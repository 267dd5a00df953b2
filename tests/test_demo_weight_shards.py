"""The bundled demo weights as shards under 10 MB (a Space's git limit outside LFS) behind a safetensors
index: they load bit for bit as the unsharded files did, and the repo's command writes exactly them."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from opensora.checkpoints import file_status, load_checked, read_shapes, require_files, shard_files
from opensora.errors import UserError
from opensora.presets import load_preset
from training.cli import main
from training.demo.weight_shards import write_shards

REPO = Path(__file__).resolve().parents[1]
SPACE_FILE_LIMIT = 10 * 1000 * 1000  # bytes: the Hugging Face Space's git refuses bigger files outside LFS
PRESET = load_preset("demo")
INDEXES = {"mmdit": REPO / PRESET.files.mmdit, "vae": REPO / PRESET.files.vae}


def merged_shards(index: Path) -> dict[str, torch.Tensor]:
    """Every tensor of every shard, read with plain safetensors (no index logic)."""
    merged = {}
    for shard in sorted(index.parent.glob(index.name.replace(".safetensors.index.json", "-*-of-*.safetensors"))):
        tensors = load_file(str(shard))
        assert not merged.keys() & tensors.keys(), f"{shard.name} repeats tensors"
        merged.update(tensors)
    return merged


def test_no_file_of_the_demo_model_is_over_the_space_limit():
    files = [p for p in (REPO / "models" / "demo").rglob("*") if p.is_file()]
    assert files and all(p.stat().st_size < SPACE_FILE_LIMIT for p in files), [
        (p.name, p.stat().st_size) for p in files if p.stat().st_size >= SPACE_FILE_LIMIT]
    assert not (REPO / "models/demo/mmdit.safetensors").exists() and not (REPO / "models/demo/vae.safetensors").exists()


@pytest.mark.parametrize("role", ["mmdit", "vae"])
def test_the_preset_loads_exactly_the_shards_tensors(role):
    index = INDEXES[role]
    merged = merged_shards(index)
    weight_map = json.loads(index.read_text())["weight_map"]
    assert set(weight_map) == set(merged) and len(shard_files(index)) >= 2
    loaded = load_checked(index, read_shapes(index), role)
    assert loaded.keys() == merged.keys()
    for key, tensor in merged.items():
        assert loaded[key].dtype == tensor.dtype and torch.equal(loaded[key], tensor), key
    assert all(s.ready for s in file_status(PRESET, None))


def _unsharded_from_git_history(name: str) -> bytes | None:
    """The last committed unsharded file (deleted when the shards came), or None without git history."""
    try:
        commit = subprocess.run(["git", "log", "-1", "--format=%H", "--", f"models/demo/{name}"], cwd=REPO,
                                capture_output=True, text=True, check=True).stdout.strip()
        if not commit:
            return None
        blob = subprocess.run(["git", "show", f"{commit}^:models/demo/{name}"], cwd=REPO, capture_output=True,
                              check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return blob


@pytest.mark.parametrize("role", ["mmdit", "vae"])
def test_the_shards_hold_the_unsharded_files_bit_for_bit(role, tmp_path):
    blob = _unsharded_from_git_history(f"{role}.safetensors")
    if blob is None:
        pytest.skip("no git history with the unsharded file")
    path = tmp_path / f"{role}.safetensors"
    path.write_bytes(blob)
    original = load_file(str(path))
    merged = merged_shards(INDEXES[role])
    assert original.keys() == merged.keys()
    assert all(original[k].dtype == merged[k].dtype and torch.equal(original[k], merged[k]) for k in original)
    with safe_open(str(path), "pt") as f, safe_open(str(shard_files(INDEXES[role])[0]), "pt") as g:
        assert g.metadata() == f.metadata()  # e.g. the VAE's scale_factor


def test_the_shard_command_rewrites_the_committed_files(tmp_path, capsys):
    """Same file names, index and tensors; safetensors orders a header's metadata keys differently from
    run to run, so the shards are compared by content, not byte for byte."""
    assert main(["demo-shard-weights", "--mmdit", str(INDEXES["mmdit"]), "--vae", str(INDEXES["vae"]),
                 "--out", str(tmp_path)]) == 0
    committed = sorted(p for p in (REPO / "models" / "demo").iterdir() if p.is_file())
    written = sorted(p for p in tmp_path.iterdir() if p.is_file())
    assert [p.name for p in written] == [p.name for p in committed]
    for new, old in zip(written, committed):
        if new.suffix == ".json":
            assert new.read_bytes() == old.read_bytes(), new.name
            continue
        a, b = load_file(str(new)), load_file(str(old))
        assert list(a) == list(b) and all(torch.equal(a[k], b[k]) and a[k].dtype == b[k].dtype for k in a), new.name
        with safe_open(str(new), "pt") as f, safe_open(str(old), "pt") as g:
            assert f.metadata() == g.metadata()


def test_shards_round_trip_under_a_small_limit_and_a_missing_shard_is_named(tmp_path):
    generator = torch.Generator().manual_seed(0)
    tensors = {f"layer.{i}.weight": torch.randn(64, 16, generator=generator) for i in range(5)}
    tensors["layer.0.bias"] = torch.arange(3, dtype=torch.int64)
    index = write_shards(tensors, {"scale_factor": "0.5"}, tmp_path, "model", max_bytes=2 * 64 * 16 * 4)
    shards = shard_files(index)
    assert [s.name for s in shards] == ["model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors",
                                        "model-00003-of-00003.safetensors"]
    loaded = load_checked(index, {k: tuple(v.shape) for k, v in tensors.items()}, "test weights")
    assert all(torch.equal(loaded[k], v) for k, v in tensors.items())
    with safe_open(str(shards[1]), "pt") as f:
        assert f.metadata() == {"scale_factor": "0.5"}

    with pytest.raises(UserError, match="more than a shard may"):
        write_shards(tensors, None, tmp_path / "x", "model", max_bytes=100)
    copy = tmp_path / "copy"
    shutil.copytree(tmp_path, copy, ignore=shutil.ignore_patterns("copy", "x"))
    (copy / "model-00002-of-00003.safetensors").unlink()
    from opensora.checkpoints import safetensors_problem

    assert safetensors_problem(copy / index.name) == "shards missing: model-00002-of-00003.safetensors"
    with pytest.raises(UserError, match=r"model-00002-of-00003.safetensors is not a readable safetensors file"):
        load_checked(copy / index.name, {}, "test weights")


def test_a_demo_preset_missing_a_shard_says_which(tmp_path):
    demo = tmp_path / "demo-copy"
    shutil.copytree(REPO / "models" / "demo", demo)
    (demo / "vae-00002-of-00002.safetensors").unlink()
    text = (REPO / "presets" / "demo.toml").read_text().replace('"models/demo/', f'"{demo}/')
    preset_path = tmp_path / "demo-copy.toml"
    preset_path.write_text(text)
    preset = load_preset(str(preset_path))
    with pytest.raises(UserError, match=r"vae.safetensors.index.json \(shards missing: vae-00002-of-00002.safetensors\)"):
        require_files(preset, None)
