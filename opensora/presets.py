"""Presets: one TOML file per model / resolution / memory profile, read by the app and the CLI.

A preset names the checkpoint files, the architecture, the sampler defaults and the bucket table
(pixel (height, width) per resolution and aspect-ratio name).
"""

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from opensora.configs import MMDiTConfig, TextConfig, VAEConfig
from opensora.errors import UserError

PRESET_DIR = Path(__file__).resolve().parent.parent / "presets"
WEIGHT_SOURCES = ("official", "random", "bundled")
MAX_FRAMES = 129


@dataclass
class CheckpointFiles:
    """Paths relative to the checkpoint folder (official) or to the repo root (bundled)."""

    mmdit: str = "Open_Sora_v2.safetensors"
    vae: str = "hunyuan_vae.safetensors"
    t5: str = "google/t5-v1_1-xxl"
    clip: str = "openai/clip-vit-large-patch14"


@dataclass
class SamplerDefaults:
    resolution: str = "256px"
    aspect_ratio: str = "16:9"
    num_frames: int = 129
    num_steps: int = 50
    guidance: float = 7.5
    guidance_img: float = 3.0
    text_osci: bool = True
    image_osci: bool = True
    scale_temporal_osci: bool = True
    shift: bool = True
    flow_shift: float | None = None
    motion_score: int = 4
    fps: int = 24  # written into the prompt and the mp4


@dataclass
class PromptSettings:
    """How prompts reach the model. `vocabulary`: the closed vocabulary the model was trained on
    ("shapes-world" for the demo model); every prompt is mapped onto it and the user is told how."""

    vocabulary: str | None = None
    example: str = "a red fox running through fresh snow"  # shown as the UI's placeholder


@dataclass
class Limits:
    """Frame counts a preset accepts, and up to where its model was trained (a warning past it)."""

    max_frames: int = MAX_FRAMES
    trained_frames: int | None = None


VOCABULARIES = ("shapes-world",)


@dataclass
class Preset:
    name: str
    description: str
    weights: str  # "official" (from --ckpt-dir), "random" (made at load) or "bundled" (in the repo)
    files: CheckpointFiles
    mmdit: MMDiTConfig
    vae: VAEConfig
    text: TextConfig
    sampler: SamplerDefaults
    buckets: dict[str, dict[str, tuple[int, int]]]
    prompt: PromptSettings = field(default_factory=PromptSettings)
    limits: Limits = field(default_factory=Limits)
    seed: int = 0  # random-weight presets: weights drawn from this seed
    download: str = ""  # the command that fetches the official files
    path: Path = field(default=Path())

    @property
    def spatial_unit(self) -> int:
        """Pixels per latent token side: VAE compression x patch size (16 for Open-Sora 2.0)."""
        return self.vae.spatial_compression * self.mmdit.patch_size

    def image_size(self, resolution: str, aspect_ratio: str) -> tuple[int, int]:
        if resolution not in self.buckets:
            raise UserError(
                f"unknown resolution {resolution!r} for preset {self.name}; allowed: {', '.join(self.buckets)}"
            )
        table = self.buckets[resolution]
        if aspect_ratio not in table:
            raise UserError(
                f"unknown aspect ratio {aspect_ratio!r} at {resolution}; allowed: {', '.join(table)}"
            )
        return table[aspect_ratio]


def available_presets() -> list[str]:
    # buckets-*.toml (training bucket tables) and train-*.toml (trainer settings) are not models.
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml") if not p.stem.startswith(("buckets", "train-")))


def _section(data: dict, name: str, cls, source: Path):
    values = data.get(name, {})
    unknown = set(values) - set(cls.__dataclass_fields__)
    if unknown:
        raise UserError(f"preset {source}: unknown keys in [{name}]: {', '.join(sorted(unknown))}")
    return cls(**values)


def load_preset(name_or_path: str) -> Preset:
    """A preset by name (a file in presets/) or by path to a TOML file."""
    path = Path(name_or_path)
    if path.suffix != ".toml":
        path = PRESET_DIR / f"{name_or_path}.toml"
    if not path.is_file():
        raise UserError(f"unknown preset {name_or_path!r}; available: {', '.join(available_presets())}")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise UserError(f"preset {path} is not valid TOML: {err}") from None
    if data.get("weights") not in WEIGHT_SOURCES:
        raise UserError(f"preset {path}: weights must be one of {', '.join(WEIGHT_SOURCES)}")
    preset = Preset(
        name=data.get("name", path.stem),
        description=data.get("description", ""),
        weights=data["weights"],
        files=_section(data, "files", CheckpointFiles, path),
        mmdit=_section(data, "mmdit", MMDiTConfig, path),
        vae=_section(data, "vae", VAEConfig, path),
        text=_section(data, "text", TextConfig, path),
        sampler=_section(data, "sampler", SamplerDefaults, path),
        buckets={
            res: {ar: tuple(hw) for ar, hw in table.items()} for res, table in data.get("buckets", {}).items()
        },
        prompt=_section(data, "prompt", PromptSettings, path),
        limits=_section(data, "limits", Limits, path),
        seed=data.get("seed", 0),
        download=data.get("download", ""),
        path=path,
    )
    _validate_buckets(preset)
    return preset


def _validate_buckets(preset: Preset) -> None:
    unit = preset.spatial_unit
    for res, table in preset.buckets.items():
        for ar, (h, w) in table.items():
            if h % unit or w % unit:
                raise UserError(f"preset {preset.name}: bucket {res} {ar} = {h}x{w} is not a multiple of {unit}")
    if preset.prompt.vocabulary not in (None, *VOCABULARIES):
        raise UserError(f"preset {preset.name}: unknown prompt vocabulary {preset.prompt.vocabulary!r}; "
                        f"known: {', '.join(VOCABULARIES)}")
    if not 1 <= preset.limits.max_frames <= MAX_FRAMES:
        raise UserError(f"preset {preset.name}: limits.max_frames {preset.limits.max_frames} must be 1-{MAX_FRAMES}")
    if preset.sampler.resolution not in preset.buckets:
        raise UserError(f"preset {preset.name}: default resolution {preset.sampler.resolution} has no bucket table")
