"""Memory profiles from `presets/profiles/memory.toml`. No torch import: the CLI and the UI read
them before anything heavy loads."""

import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

from opensora.errors import UserError
from opensora.presets import PRESET_DIR

PROFILES_FILE = PRESET_DIR / "profiles" / "memory.toml"
PLACEMENTS = {
    "encoders": ("resident", "swap", "leaf"),
    "mmdit": ("resident", "swap", "group", "leaf", "disk"),
    "vae": ("resident", "swap"),
}


@dataclass(frozen=True)
class MemoryProfile:
    name: str
    description: str
    encoders: str
    mmdit: str
    vae: str
    vae_temporal_tiling: bool
    relative_time: float


@dataclass(frozen=True)
class PlannerConstants:
    host_runtime_gb: float
    host_workspace_gb: float
    cuda_context_gb: float
    mmdit_activation_factor: float
    vae_activation_factor: float
    vae_tile_frames: int
    vae_tile_stride_frames: int


def _read(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise UserError(f"memory profiles {path}: {err}") from None


def _build(cls, values: dict, where: str, **extra):
    names = {f.name for f in fields(cls)} - set(extra)
    if set(values) != names:
        raise UserError(f"{where}: keys must be {', '.join(sorted(names))}; got {', '.join(sorted(values))}")
    return cls(**extra, **values)


def load_memory_profiles(path: Path = PROFILES_FILE) -> dict[str, MemoryProfile]:
    """name -> profile, in file order (fastest first)."""
    profiles = {}
    for name, values in _read(path).get("profiles", {}).items():
        profile = _build(MemoryProfile, values, f"{path} [profiles.{name}]", name=name)
        for part, allowed in PLACEMENTS.items():
            if getattr(profile, part) not in allowed:
                raise UserError(f"{path} [profiles.{name}]: {part} = {getattr(profile, part)!r}; allowed: {', '.join(allowed)}")
        profiles[name] = profile
    if not profiles:
        raise UserError(f"{path} defines no [profiles.*]")
    return profiles


def memory_profile(name: str, path: Path = PROFILES_FILE) -> MemoryProfile:
    profiles = load_memory_profiles(path)
    if name not in profiles:
        raise UserError(f"unknown memory profile {name!r}; allowed: auto, {', '.join(profiles)}")
    return profiles[name]


def planner_constants(path: Path = PROFILES_FILE) -> PlannerConstants:
    return _build(PlannerConstants, _read(path).get("planner", {}), f"{path} [planner]")


def official_text_encoder_configs(path: Path = PROFILES_FILE) -> dict[str, dict]:
    """{"t5": {...}, "clip": {...}}: transformers config fields of the official encoders."""
    return _read(path).get("text_encoders", {})
