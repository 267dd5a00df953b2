"""Finding and loading checkpoint files, with errors that name what is wrong.

Official files are read unchanged from a local folder (default ./ckpts) under the official names.
Every key is checked before anything is loaded: missing, unexpected and wrongly shaped tensors
are reported together. Only safetensors are read; nothing is ever unpickled.
"""

import json
import struct
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from opensora.errors import UserError, listing
from opensora.presets import DEFAULT_CKPT_DIR, FAMILY_V1_2, Preset

REPO_ROOT = Path(__file__).resolve().parent.parent
MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit on the JSON header


@dataclass
class FileStatus:
    role: str  # mmdit, vae, t5, clip (1.2: stdit3, vae, t5); flux, flux_ae for a preset with a [flux] part
    path: Path
    present: bool
    problem: str = ""  # why a present file cannot be used (empty: it can)

    @property
    def ready(self) -> bool:
        return self.present and not self.problem

    def describe(self) -> str:
        """`path` or `path (what is wrong)`, for messages."""
        return f"{self.path} ({self.problem})" if self.present and self.problem else str(self.path)


def checkpoint_root(preset: Preset, ckpt_dir: str | Path | None) -> Path:
    if preset.weights == "bundled":
        return REPO_ROOT
    return Path(ckpt_dir or DEFAULT_CKPT_DIR)


def file_status(preset: Preset, ckpt_dir: str | Path | None) -> list[FileStatus]:
    """Presence and validity of each file a preset needs (T5/CLIP are folders holding config.json):
    a file only counts as ready when it reads (see `safetensors_problem`, `folder_problem`)."""
    if preset.weights == "random":
        return []
    root = checkpoint_root(preset, ckpt_dir)
    statuses = []
    for role, name in preset_files(preset).items():
        path = root / name
        folder = role in ("t5", "clip")
        present = (path / "config.json").is_file() if folder else path.is_file()
        problem = (folder_problem(path) if folder else safetensors_problem(path)) if present else ""
        statuses.append(FileStatus(role, path, present, problem))
    return statuses


def preset_files(preset: Preset) -> dict[str, str]:
    """{role: file name} of every file the preset reads: its four components (Open-Sora 1.2: STDiT3,
    its VAE and T5), and FLUX.1-dev's transformer and autoencoder when it offers text -> image -> video."""
    roles = ("stdit3", "vae", "t5") if preset.family == FAMILY_V1_2 else ("mmdit", "vae", "t5", "clip")
    files = {role: getattr(preset.files, role) for role in roles}
    if preset.flux is not None:
        files.update(flux=preset.flux.transformer, flux_ae=preset.flux.autoencoder)
    return files


def safetensors_problem(path: Path) -> str:
    """Why `path` is not a complete safetensors file ("" when it is): the header must parse and the
    file must be exactly as long as the header's tensors need (a download cut short is not).
    A shard index (`*.safetensors.index.json`) is complete when every shard it names is."""
    if is_shard_index(path):
        try:
            shards = shard_files(Path(path))
        except UserError as err:
            return str(err)
        missing = [s.name for s in shards if not s.is_file()]
        if missing:
            return f"shards missing: {listing(missing)}"
        problems = [f"{s.name}: {problem}" for s in shards if (problem := safetensors_problem(s))]
        return "; ".join(problems)
    stat = Path(path).stat()
    return _safetensors_problem(str(path), stat.st_size, stat.st_mtime_ns)


SHARD_INDEX_SUFFIX = ".safetensors.index.json"


def is_shard_index(path: Path | str) -> bool:
    """A `from_pretrained`-style index ({"weight_map": {tensor: shard file}}) instead of one file."""
    return str(path).endswith(SHARD_INDEX_SUFFIX)


def shard_files(index_path: Path) -> list[Path]:
    """The shard files an index names, beside it, in the order they first appear."""
    try:
        weight_map = json.loads(index_path.read_text(encoding="utf-8"))["weight_map"]
        names = list(dict.fromkeys(weight_map.values()))
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise UserError(f"{index_path} is not a readable shard index (JSON with a weight_map): {err}") from None
    if not names or not all(isinstance(n, str) and "/" not in n for n in names):
        raise UserError(f"{index_path}: weight_map must name shard files beside the index")
    return [index_path.parent / name for name in names]


@lru_cache(maxsize=256)
def _safetensors_problem(path: str, size: int, mtime_ns: int) -> str:
    if size == 0:
        return "0 bytes"
    if size < 8:
        return f"{size} bytes, too short for a safetensors header"
    with open(path, "rb") as f:
        header_len = struct.unpack("<Q", f.read(8))[0]
        if header_len > min(size - 8, MAX_HEADER_BYTES):
            return f"not a safetensors file (header length {header_len} in a file of {size} bytes)"
        try:
            header = json.loads(f.read(header_len))
        except (UnicodeDecodeError, ValueError):
            return "not a safetensors file (unreadable header)"
    if not isinstance(header, dict):
        return "not a safetensors file (unreadable header)"
    ends = [t["data_offsets"][1] for k, t in header.items()
            if k != "__metadata__" and isinstance(t, dict) and isinstance(t.get("data_offsets"), list) and len(t["data_offsets"]) == 2]
    if not ends:
        return "holds no tensors"
    expected = 8 + header_len + max(ends)
    if size != expected:
        return f"{size} bytes where its header needs {expected} (truncated or damaged download)"
    return ""


def folder_problem(path: Path) -> str:
    """Why a text-encoder folder cannot be loaded ("" when it can): config.json must parse to a
    JSON object, and the safetensors weights in it must be complete."""
    try:
        config = json.loads((Path(path) / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return "config.json is empty or not JSON"
    if not isinstance(config, dict):
        return "config.json is not a JSON object"
    for file in sorted(Path(path).glob("*.safetensors")):
        problem = safetensors_problem(file)
        if problem:
            return f"{file.name}: {problem}"
    return ""


def require_files(preset: Preset, ckpt_dir: str | Path | None, roles: tuple[str, ...] | None = None) -> None:
    """Raise a UserError naming every missing file (of `roles`, default all) and how to get them."""
    missing = [s for s in file_status(preset, ckpt_dir) if not s.ready and (roles is None or s.role in roles)]
    if not missing:
        return
    names = "\n".join(f"  - {s.describe()} ({s.role})" for s in missing)
    how = f"\nDownload them with:\n  {preset.download}" if preset.download else ""
    raise UserError(
        f"preset {preset.name} needs files that are missing or broken:\n{names}{how}\n"
        f"`python -m opensora check --ckpt-dir {checkpoint_root(preset, ckpt_dir)} --preset {preset.name}` lists them."
    )


def check_keys(found: dict[str, tuple[int, ...]], expected: dict[str, tuple[int, ...]], path: Path, what: str) -> None:
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    wrong = [f"{k} {list(found[k])} (expected {list(expected[k])})" for k in expected if k in found and found[k] != expected[k]]
    if not (missing or unexpected or wrong):
        return
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys: {listing(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys: {listing(unexpected)}")
    if wrong:
        problems.append(f"{len(wrong)} tensors with the wrong shape: {listing(wrong)}")
    raise UserError(
        f"{path} does not match the {what} of this preset:\n  " + "\n  ".join(problems) +
        "\nIs it the right file for this preset (or the right preset for this file)?"
    )


def read_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """{tensor: shape} of a safetensors file, or of all the shards of an index."""
    if is_shard_index(path):
        shapes = {}
        for shard in shard_files(Path(path)):
            shapes.update(read_shapes(shard))
        return shapes
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as err:  # safetensors raises several types for bad headers
        raise UserError(f"{path} is not a readable safetensors file: {err}") from None


def load_checked(path: Path, expected: dict[str, tuple[int, ...]], what: str) -> dict[str, torch.Tensor]:
    """Load a safetensors file (or the shards of an index) after checking its key set and shapes
    against `expected`."""
    check_keys(read_shapes(path), expected, path, what)
    if is_shard_index(path):
        return {k: v for shard in shard_files(Path(path)) for k, v in load_file(str(shard)).items()}
    return load_file(str(path))


def default_preset_name(ckpt_dir: str | Path | None = None) -> str:
    """The official 256px model when its files are present, else the bundled demo model, else
    the tiny random one (so a fresh clone always runs)."""
    from opensora.presets import available_presets, load_preset

    names = available_presets()
    for name in ("opensora-v2-256px", "demo"):
        if name in names and all(s.ready for s in file_status(load_preset(name), ckpt_dir)):
            return name
    return "tiny-random"
