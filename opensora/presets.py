"""Presets: one TOML file per model / resolution / memory profile, read by the app and the CLI.

A preset names the checkpoint files, the architecture, the sampler defaults and the bucket table
(pixel (height, width) per resolution and aspect-ratio name). `family` (default "opensora-v2")
says which model family the file describes; "opensora-v1.2" presets have their own [files],
[stdit3], [vae] and [sampler] keys, and the [lengths] and [official_aspect_ratio] tables.
"""

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from opensora.configs import (
    DCAEConfig, FluxSettings, MMDiTConfig, SpeedSettings, STDiT3Config, TextConfig, VAEConfig, VAEV12Config,
    check_num_frames_v1_2,
)
from opensora.errors import UserError

PRESET_DIR = Path(__file__).resolve().parent.parent / "presets"
DEFAULT_CKPT_DIR = "ckpts"  # where an official preset's files are looked for (--ckpt-dir), under the official names
# Where videos, sidecars, results.csv and the job queue go (--output-dir of the app and every command):
# one default, so `queue add` on the command line reaches the queue of an app started plainly.
DEFAULT_OUTPUT_DIR = "outputs"
WEIGHT_SOURCES = ("official", "random", "bundled")
MAX_FRAMES = 129
FAMILY_V2, FAMILY_V1_2 = "opensora-v2", "opensora-v1.2"
FAMILY_NAMES = {FAMILY_V2: "Open-Sora 2.0", FAMILY_V1_2: "Open-Sora 1.2"}
V1_2_TABLES = ("stdit3", "lengths", "official_aspect_ratio")  # only an Open-Sora 1.2 preset has these


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
class CheckpointFilesV12:
    """Open-Sora 1.2: the STDiT3 and VAE files of hpcai-tech/OpenSora-STDiT-v3 and -VAE-v1.2, and
    the T5-XXL folder shared with 2.0 (relative to the checkpoint folder)."""

    stdit3: str = "OpenSora-STDiT-v3/model.safetensors"
    vae: str = "OpenSora-VAE-v1.2/model.safetensors"
    t5: str = "google/t5-v1_1-xxl"


@dataclass
class SamplerDefaultsV12:
    """Open-Sora 1.2: rectified flow and the score conditioning of its T5 prompt (official defaults)."""

    resolution: str = "240p"
    aspect_ratio: str = "16:9"
    num_frames: int = 51
    max_frames: int = 408  # "16s"
    num_steps: int = 30
    guidance: float = 7.0  # the official cfg_scale
    use_timestep_transform: bool = True
    align: int | None = 5  # mask-strategy position snapping (official 5)
    aesthetic_score: float | None = 6.5
    motion_score: float | None = None  # the official --flow: "motion score: 4.0." (None: not in the prompt)
    camera_motion: str | None = None
    fps: int = 24


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
    files: CheckpointFiles | CheckpointFilesV12
    mmdit: MMDiTConfig | None  # None for Open-Sora 1.2 (its transformer is `stdit3`)
    # [vae]: the HunyuanVideo VAE (1.2: the v1.2 VAE); [dc_ae]: the Video DC-AE (high compression)
    vae: VAEConfig | DCAEConfig | VAEV12Config
    text: TextConfig
    sampler: SamplerDefaults | SamplerDefaultsV12
    buckets: dict[str, dict[str, tuple[int, int]]]
    prompt: PromptSettings = field(default_factory=PromptSettings)
    limits: Limits = field(default_factory=Limits)
    seed: int = 0  # random-weight presets: weights drawn from this seed
    download: str = ""  # the command that fetches the official files
    path: Path = field(default=Path())
    flux: FluxSettings | None = None  # [flux]: text -> image -> video through FLUX.1-dev (None: not offered)
    speed: SpeedSettings | None = None  # [speed]: the step caches of --speed balanced / fast (None: quality only)
    family: str = FAMILY_V2
    stdit3: STDiT3Config | None = None  # Open-Sora 1.2's transformer
    lengths: dict[str, int] = field(default_factory=dict)  # 1.2: named lengths ("4s" = 102 frames)
    # 1.2: this preset's aspect-ratio name (width:height) -> the official v1.2 name (height:width)
    official_aspect_ratio: dict[str, str] = field(default_factory=dict)

    @property
    def family_name(self) -> str:
        return FAMILY_NAMES[self.family]

    @property
    def label(self) -> str:
        """How pickers show the preset: `opensora-v1-2 (Open-Sora 1.2)`."""
        return f"{self.name} ({self.family_name})"

    @property
    def spatial_unit(self) -> int:
        """Pixels per latent token side: VAE compression x patch size (16 for Open-Sora 2.0 and 1.2)."""
        patch = self.stdit3.patch_size[1] if self.family == FAMILY_V1_2 else self.mmdit.patch_size
        return self.vae.spatial_compression * patch

    @property
    def size_multiple(self) -> int:
        """What bucket and explicit sizes must be multiples of: the token size for 2.0; any size for
        1.2, whose VAE floors to 8 pixels (426 -> 424 columns) and whose STDiT3 pads to its patches."""
        return 1 if self.family == FAMILY_V1_2 else self.spatial_unit

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


def _autoencoder(data: dict, source: Path) -> VAEConfig | DCAEConfig:
    """[vae] (HunyuanVideo VAE, the default) or [dc_ae] (Video DC-AE), never both."""
    if "dc_ae" in data:
        if "vae" in data:
            raise UserError(f"preset {source}: give [vae] or [dc_ae], not both (one autoencoder per preset)")
        return _section(data, "dc_ae", DCAEConfig, source)
    return _section(data, "vae", VAEConfig, source)


def _model_sections(data: dict, family: str, source: Path) -> dict:
    """The Preset fields whose TOML tables depend on the family."""
    if family not in FAMILY_NAMES:
        raise UserError(f"preset {source}: unknown family {family!r}; known: {', '.join(FAMILY_NAMES)}")
    if family == FAMILY_V2:
        extra = [name for name in V1_2_TABLES if name in data]
        if extra:
            raise UserError(f"preset {source}: [{extra[0]}] is an Open-Sora 1.2 table; "
                            f'set family = "{FAMILY_V1_2}" or remove it')
        return dict(
            files=_section(data, "files", CheckpointFiles, source), mmdit=_section(data, "mmdit", MMDiTConfig, source),
            vae=_autoencoder(data, source), sampler=_section(data, "sampler", SamplerDefaults, source),
            limits=_section(data, "limits", Limits, source),
        )
    for name in ("mmdit", "dc_ae", "flux"):
        if name in data:
            raise UserError(f"preset {source}: [{name}] is an Open-Sora 2.0 table; an {FAMILY_V1_2} preset has "
                            "[stdit3] and [vae]")
    if "max_frames" in data.get("limits", {}):
        raise UserError(f"preset {source}: an {FAMILY_V1_2} preset gives max_frames in [sampler], not [limits]")
    sampler = _section(data, "sampler", SamplerDefaultsV12, source)
    limits = _section(data, "limits", Limits, source)
    limits.max_frames = sampler.max_frames
    return dict(
        files=_section(data, "files", CheckpointFilesV12, source), mmdit=None,
        stdit3=_section(data, "stdit3", STDiT3Config, source), vae=_section(data, "vae", VAEV12Config, source),
        sampler=sampler, limits=limits, lengths=dict(data.get("lengths", {})),
        official_aspect_ratio=dict(data.get("official_aspect_ratio", {})),
    )


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
    family = data.get("family", FAMILY_V2)
    preset = Preset(
        name=data.get("name", path.stem),
        description=data.get("description", ""),
        weights=data["weights"],
        family=family,
        **_model_sections(data, family, path),
        text=_section(data, "text", TextConfig, path),
        buckets={
            res: {ar: tuple(hw) for ar, hw in table.items()} for res, table in data.get("buckets", {}).items()
        },
        prompt=_section(data, "prompt", PromptSettings, path),
        seed=data.get("seed", 0),
        download=data.get("download", ""),
        path=path,
        flux=_section(data, "flux", FluxSettings, path) if "flux" in data else None,
        speed=_section(data, "speed", SpeedSettings, path) if "speed" in data else None,
    )
    _validate_buckets(preset)
    return preset


def _validate_buckets(preset: Preset) -> None:
    unit, least = preset.size_multiple, preset.spatial_unit
    for res, table in preset.buckets.items():
        for ar, (h, w) in table.items():
            if h % unit or w % unit or min(h, w) < least:
                raise UserError(f"preset {preset.name}: bucket {res} {ar} = {h}x{w} is not a multiple of {unit} "
                                f"of at least {least}")
    if preset.prompt.vocabulary not in (None, *VOCABULARIES):
        raise UserError(f"preset {preset.name}: unknown prompt vocabulary {preset.prompt.vocabulary!r}; "
                        f"known: {', '.join(VOCABULARIES)}")
    if preset.family == FAMILY_V1_2:
        _validate_v1_2(preset)
    elif not 1 <= preset.limits.max_frames <= MAX_FRAMES:
        raise UserError(f"preset {preset.name}: limits.max_frames {preset.limits.max_frames} must be 1-{MAX_FRAMES}")
    if preset.sampler.resolution not in preset.buckets:
        raise UserError(f"preset {preset.name}: default resolution {preset.sampler.resolution} has no bucket table")
    if preset.speed is not None:
        _validate_speed(preset)
    if preset.flux is not None and preset.flux.image_resolution not in preset.buckets:
        raise UserError(f"preset {preset.name}: flux.image_resolution {preset.flux.image_resolution} has no "
                        f"bucket table; tables: {', '.join(preset.buckets)}")


def _validate_speed(preset: Preset) -> None:
    from opensora.sampling.cache_spec import parse_cache_spec

    if preset.family == FAMILY_V1_2:
        raise UserError(f"preset {preset.name}: [speed] (step caching) is for Open-Sora 2.0 presets only")
    for level in ("balanced", "fast"):
        try:
            parse_cache_spec(getattr(preset.speed, level))
        except UserError as err:
            raise UserError(f"preset {preset.name}: [speed] {level}: {err}") from None


def _validate_v1_2(preset: Preset) -> None:
    s, where = preset.sampler, f"preset {preset.name}"
    if s.max_frames < preset.vae.micro_frame_size:
        raise UserError(f"{where}: sampler.max_frames {s.max_frames} must be at least {preset.vae.micro_frame_size}")
    counts = {"sampler.num_frames": s.num_frames, **{f"lengths.{k}": v for k, v in preset.lengths.items()}}
    for name, frames in counts.items():
        try:
            check_num_frames_v1_2(frames, s.max_frames, preset.vae.micro_frame_size)
        except UserError as err:
            raise UserError(f"{where}: {name}: {err}") from None
    unnamed = sorted({ar for table in preset.buckets.values() for ar in table} - set(preset.official_aspect_ratio))
    if unnamed:
        raise UserError(f"{where}: [official_aspect_ratio] has no official (height:width) name for "
                        f"{', '.join(unnamed)}")
    if preset.text.t5_max_length != preset.stdit3.model_max_length:
        raise UserError(f"{where}: text.t5_max_length {preset.text.t5_max_length} must equal stdit3.model_max_length "
                        f"{preset.stdit3.model_max_length} (the learned null caption's length)")
