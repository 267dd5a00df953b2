"""Finding and loading checkpoint files, with errors that name what is wrong.

Official files are read unchanged from a local folder (default ./ckpts) under the official names.
Every key is checked before anything is loaded: missing, unexpected and wrongly shaped tensors
are reported together. Only safetensors are read; nothing is ever unpickled.
"""

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from opensora.errors import UserError, listing
from opensora.presets import Preset

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CKPT_DIR = Path("ckpts")


@dataclass
class FileStatus:
    role: str  # mmdit, vae, t5, clip
    path: Path
    present: bool


def checkpoint_root(preset: Preset, ckpt_dir: str | Path | None) -> Path:
    if preset.weights == "bundled":
        return REPO_ROOT
    return Path(ckpt_dir) if ckpt_dir else DEFAULT_CKPT_DIR


def file_status(preset: Preset, ckpt_dir: str | Path | None) -> list[FileStatus]:
    """Presence of each file a preset needs (T5/CLIP are folders holding config.json)."""
    if preset.weights == "random":
        return []
    root = checkpoint_root(preset, ckpt_dir)
    statuses = []
    for role in ("mmdit", "vae", "t5", "clip"):
        path = root / getattr(preset.files, role)
        present = (path / "config.json").is_file() if role in ("t5", "clip") else path.is_file()
        statuses.append(FileStatus(role, path, present))
    return statuses


def require_files(preset: Preset, ckpt_dir: str | Path | None, roles: tuple[str, ...] | None = None) -> None:
    """Raise a UserError naming every missing file (of `roles`, default all) and how to get them."""
    missing = [s for s in file_status(preset, ckpt_dir) if not s.present and (roles is None or s.role in roles)]
    if not missing:
        return
    names = "\n".join(f"  - {s.path} ({s.role})" for s in missing)
    how = f"\nDownload them with:\n  {preset.download}" if preset.download else ""
    raise UserError(
        f"preset {preset.name} needs files that are missing:\n{names}{how}\n"
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
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as err:  # safetensors raises several types for bad headers
        raise UserError(f"{path} is not a readable safetensors file: {err}") from None


def load_checked(path: Path, expected: dict[str, tuple[int, ...]], what: str) -> dict[str, torch.Tensor]:
    """Load a safetensors file after checking its key set and shapes against `expected`."""
    check_keys(read_shapes(path), expected, path, what)
    return load_file(str(path))


def default_preset_name(ckpt_dir: str | Path | None = None) -> str:
    """The official 256px model when its files are present, else the bundled demo model, else
    the tiny random one (so a fresh clone always runs)."""
    from opensora.presets import available_presets, load_preset

    names = available_presets()
    for name in ("opensora-v2-256px", "demo"):
        if name in names and all(s.present for s in file_status(load_preset(name), ckpt_dir)):
            return name
    return "tiny-random"
