"""GenerationSettings: one generation, resolved and checked once, before any model loads.

A `GenerationRequest` holds what the user chose (UI form, CLI flags, CSV row, a sidecar to reuse);
None means "the preset's default". `resolve_settings(request, preset)` fills the defaults, checks
every value against its allowed range and returns `GenerationSettings`, whose `asdict` is the
sidecar of each video (plus what the run measured: see `opensora.runner`).

Seeds: a video's `seed` reproduces it alone. Sample k of a request with seed S is made exactly as
a one-sample request with seed S + k (its references are sampled and its noise drawn from S + k),
so "reuse" of any sample of a batch gives that sample back.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from opensora.errors import UserError
from opensora.presets import FAMILY_V1_2, FAMILY_V2, Preset

SEED_MAX = 2**32 - 1
MAX_PROMPT_CHARS = 2000  # T5 reads 512 tokens at most; a longer text only bloats sidecars and memory
RANGES = {
    "num_steps": (1, 500),
    "guidance": (0.0, 50.0),
    "guidance_img": (0.0, 50.0),
    "num_samples": (1, 64),
    "seed": (0, SEED_MAX),
    "noise_seed": (0, SEED_MAX),
}
MAX_PIXELS_SIDE = 4096
AUTO_ASPECT = "auto"  # image/video conditioning: the bucket closest to the reference's shape


def check_range(name: str, value, low, high):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise UserError(f"{name} {value!r} is out of range: allowed {low} to {high}")
    return value


def check_num_frames(num_frames, max_frames: int = 129) -> int:
    """4k+1 frames (the causal 4x time compression of the Open-Sora 2.0 VAEs)."""
    if isinstance(num_frames, bool) or not isinstance(num_frames, int) or not 1 <= num_frames <= max_frames \
            or (num_frames - 1) % 4:
        raise UserError(
            f"num_frames {num_frames!r} is not allowed: use 4k+1 frames between 1 and {max_frames} "
            f"(1, 5, 9, ..., 33, ..., {max_frames})"
        )
    return num_frames


def check_frames(preset: Preset, num_frames) -> int:
    """The frame rule of the preset's family (the one place that picks it): 4k+1 for Open-Sora 2.0;
    1 or 17..max (or a named length such as "4s") for Open-Sora 1.2."""
    if preset.family == FAMILY_V1_2:
        from opensora.generation_settings_v1_2 import check_frames_v1_2

        return check_frames_v1_2(num_frames, preset)
    return check_num_frames(num_frames, preset.limits.max_frames)


@dataclass(frozen=True)
class FrameRule:
    """The frame counts a preset accepts, for pickers: 1, then `first`, first + step, ... up to
    `max_frames` (2.0: 1, 5, 9, ...; 1.2: 1, 17, 18, ...). `check_frames` is the check itself."""

    first: int
    step: int
    max_frames: int
    text: str  # e.g. "4k+1, at most 129"

    def nearest(self, num_frames: int) -> int:
        if num_frames < self.first:
            return 1 if num_frames - 1 < self.first - num_frames else self.first
        last = self.first + (self.max_frames - self.first) // self.step * self.step
        return min(last, self.first + round((num_frames - self.first) / self.step) * self.step)


def frame_rule(preset: Preset) -> FrameRule:
    """The picker's view of `check_frames` for the preset's family."""
    limit = preset.limits.max_frames
    if preset.family == FAMILY_V1_2:
        first = preset.vae.micro_frame_size
        lengths = ", ".join(f"{k} = {v}" for k, v in preset.lengths.items())
        return FrameRule(first, 1, limit, f"1 or {first}-{limit}" + (f" ({lengths})" if lengths else ""))
    return FrameRule(5, 4, limit, f"4k+1, at most {limit}")


def check_prompt(prompt, what: str = "prompt") -> str:
    if not isinstance(prompt, str) or not prompt.strip():
        if what == "prompt":
            raise UserError("the prompt is empty: describe the video to generate")
        raise UserError(f"the {what} is not text")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise UserError(f"the {what} has {len(prompt)} characters; the limit is {MAX_PROMPT_CHARS}")
    return prompt


@dataclass
class LoraChoice:
    path: str
    scale: float = 1.0


@dataclass
class GenerationRequest:
    """What the user asked for; None = the preset's default."""

    prompt: str
    preset: str | None = None
    negative_prompt: str = ""
    cond_type: str = "t2v"
    reference: list[str] = field(default_factory=list)  # image/video paths for the non-t2v types
    num_frames: int | str | None = None  # str: a named length of an Open-Sora 1.2 preset ("4s")
    resolution: str | None = None
    aspect_ratio: str | None = None  # "auto" (or None with a reference): follow the reference's shape
    height: int | None = None  # both or neither: replace the bucket
    width: int | None = None
    num_steps: int | None = None
    guidance: float | None = None
    guidance_img: float | None = None
    text_osci: bool | None = None
    image_osci: bool | None = None
    scale_temporal_osci: bool | None = None
    motion_score: int | float | str | None = None  # 1-15 or "dynamic" (Open-Sora 1.2: its --flow, or "none")
    seed: int | None = None  # None: a random seed, reported
    noise_seed: int | None = None  # a separate seed for the initial noise
    num_samples: int = 1
    refine: bool = False
    loras: list[LoraChoice] = field(default_factory=list)
    use_t2i2v: bool | None = None  # text -> image -> video through FLUX (None: the preset's default for t2v)
    image_resolution: str | None = None  # bucket table of the FLUX image (None: the preset's [flux] default)
    # Open-Sora 1.2 only (refused for 2.0): a raw mask strategy (wins over cond_type) and scores
    mask_strategy: str | None = None
    aesthetic_score: float | str | None = None  # "none": not in the prompt
    camera_motion: str | None = None  # "pan right", ...; "none"
    # Faster sampling (Open-Sora 2.0): a speed of the preset's [speed] table, or an explicit step cache
    # "NAME[:PARAM=V,...]" (opensora.sampling.cache_spec), and torch.compile of the MMDiT's blocks.
    speed: str | None = None  # quality (None: the default), balanced or fast
    cache: str | None = None  # wins over speed; "none": no cache
    compile: bool = False

    @classmethod
    def from_sidecar(cls, sidecar: dict, folder: Path | None = None) -> "GenerationRequest":
        """The request that remakes a video from its sidecar (relative references resolve against
        `folder`, the sidecar's own). Unknown keys (measurements, older layouts) are ignored."""
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in sidecar.items() if k in names}
        references = values.get("reference") or []
        if isinstance(references, str):
            references = references.split(";")
        if folder is not None:
            references = [str(folder / r) if not Path(r).is_absolute() else r for r in references]
        values["reference"] = references
        values["loras"] = [LoraChoice(str(lora["path"]), float(lora.get("scale", 1.0)))
                           for lora in sidecar.get("loras") or [] if isinstance(lora, dict) and "path" in lora]
        values["num_samples"] = 1
        if values.get("cache") is not None:
            values.pop("speed", None)  # the cache that ran is the truth; its speed name is found again
        values.setdefault("prompt", "")
        return cls(**values)


@dataclass
class GenerationSettings:
    """Everything that determines the videos, resolved. `asdict` is the sidecar's settings part."""

    preset: str
    prompt: str  # as the user typed it (the prompt handling record says what the model read)
    negative_prompt: str
    cond_type: str
    reference: list[str]
    num_frames: int
    resolution: str
    aspect_ratio: str
    height: int
    width: int
    num_steps: int
    guidance: float
    guidance_img: float | None  # None: not an option of the family (Open-Sora 1.2)
    text_osci: bool | None
    image_osci: bool | None
    scale_temporal_osci: bool | None
    motion_score: int | str | float | None  # "dynamic" until the runner asked the server; 1.2: --flow or None
    seed: int
    noise_seed: int | None
    num_samples: int
    refine: bool
    loras: list[LoraChoice]
    fps: int
    shift: bool | None
    flow_shift: float | None
    use_t2i2v: bool = False  # FLUX draws the first frame, the video model animates it (i2v_head)
    image_resolution: str | None = None  # the FLUX image's bucket table (None without T2I2V)
    family: str = FAMILY_V2
    # Open-Sora 1.2 (opensora.generation_settings_v1_2); None for 2.0
    mask_strategy: str | None = None  # resolved: the cond type's or the raw one ("" = text-to-video)
    aesthetic_score: float | None = None
    camera_motion: str | None = None
    align: int | None = None  # mask-strategy snapping (official 5)
    speed: str = "quality"  # quality, balanced, fast, or custom (a --cache that is none of the preset's)
    cache: str = ""  # the step cache that runs, every parameter named ("": none)
    compile: bool = False  # the MMDiT's repeated blocks torch.compile'd

    def sample(self, k: int) -> "GenerationSettings":
        """The one-sample settings of sample k (see the module docstring on seeds)."""
        if self.noise_seed is not None:
            return replace(self, noise_seed=(self.noise_seed + k) % (SEED_MAX + 1), num_samples=1)
        return replace(self, seed=(self.seed + k) % (SEED_MAX + 1), num_samples=1)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "GenerationSettings":
        """Back from `to_dict()` (a queued job's file); keys of other layouts are ignored."""
        names = {f.name for f in fields(cls)}
        known = {k: v for k, v in values.items() if k in names}
        known["loras"] = [LoraChoice(**lora) for lora in known.get("loras", [])]
        return cls(**known)


def _pick(value, default):
    return default if value is None else value


def _reference_list(reference) -> list[str]:
    if reference is None:
        return []
    if isinstance(reference, (str, Path)):
        reference = str(reference).split(";")
    return [str(r).strip() for r in reference if str(r).strip()]


def _check_references(cond_type: str, references: list[str]) -> None:
    from opensora.io.reference import check_reference_file

    if cond_type == "t2v":
        return
    if not references:
        raise UserError(f"cond type {cond_type} needs a reference image or video")
    for path in references:
        check_reference_file(path, video=cond_type.startswith("v2v"))


def _explicit_size(preset: Preset, height, width) -> tuple[int, int]:
    unit, least = preset.size_multiple, preset.spatial_unit
    what = f"multiples of {unit}" if unit > 1 else "pixel counts"
    if height is None or width is None:
        given = "height" if width is None else "width"
        raise UserError(f"{given} was given alone: give both height and width ({what}), or neither")
    for name, value in (("height", height), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least or value % unit \
                or value > MAX_PIXELS_SIDE:
            raise UserError(
                f"{name} {value!r} is not allowed: give both height and width as {what} "
                f"between {least} and {MAX_PIXELS_SIDE} for preset {preset.name}"
            )
    return height, width


def closest_aspect_ratio(preset: Preset, resolution: str, height: int, width: int) -> str:
    """The bucket of `resolution` whose shape is closest to height x width (in log ratio)."""
    table = preset.buckets[resolution]
    return min(table, key=lambda name: abs(math.log((table[name][0] / table[name][1]) / (height / width))))


def _aspect_ratio(request: GenerationRequest, preset: Preset, resolution: str, references: list[str]) -> str:
    wanted = request.aspect_ratio
    if wanted == AUTO_ASPECT or (wanted is None and references):
        if not references:
            return preset.sampler.aspect_ratio
        from opensora.io.reference import reference_size

        return closest_aspect_ratio(preset, resolution, *reference_size(references[0]))
    return _pick(wanted, preset.sampler.aspect_ratio)


def _check_cond_type_fits(cond_type: str, preset: Preset) -> None:
    """A cond type whose reference frames the preset's autoencoder cannot encode (the v2v types keep
    33 or 65 frames; the Video DC-AE takes 1 or a multiple of 4) is refused before anything loads."""
    from opensora.configs import DCAEConfig
    from opensora.sampling.conditioning import reference_spec

    spec, vae = reference_spec(cond_type), preset.vae
    if spec is None or not isinstance(vae, DCAEConfig) or vae.accepts_frames(spec.frames):
        return
    raise UserError(
        f"cond type {cond_type} cannot run on preset {preset.name}: it encodes {spec.frames} frames of the reference "
        f"video, and the preset's Video DC-AE encodes only 1 or a multiple of {vae.time_compression} frames; "
        "use t2v or an image type (i2v_head, i2v_tail, i2v_loop)"
    )


def _t2i2v(request: GenerationRequest, preset: Preset, cond_type: str) -> tuple[bool, str | None]:
    """(use_t2i2v, image_resolution). None asks for the preset's default, which only applies to t2v;
    asked for explicitly it needs a preset with FLUX and a t2v request (the image is the first frame)."""
    flux = preset.flux
    wanted = request.use_t2i2v
    if wanted is None:
        wanted = flux is not None and flux.use_t2i2v and cond_type == "t2v"
    if not wanted:
        if request.image_resolution is not None:
            raise UserError(f"image_resolution {request.image_resolution!r} only applies to text -> image -> video: "
                            "turn on use_t2i2v (--use-t2i2v) or leave it out")
        return False, None
    if flux is None:
        from opensora.presets import available_presets, load_preset

        offered = [name for name in available_presets() if load_preset(name).flux is not None]
        raise UserError(f"preset {preset.name} has no FLUX files, so text -> image -> video is not available; "
                        f"presets with FLUX: {', '.join(offered)}")
    if cond_type != "t2v":
        raise UserError(f"text -> image -> video draws the first frame itself: it works with cond type t2v only, "
                        f"not {cond_type}")
    resolution = _pick(request.image_resolution, flux.image_resolution)
    if resolution not in preset.buckets:
        raise UserError(f"image_resolution {resolution!r} is not a bucket table of preset {preset.name}; "
                        f"allowed: {', '.join(preset.buckets)}")
    return True, resolution


def _v2_fields(request: GenerationRequest, s) -> dict:
    """The GenerationSettings fields only Open-Sora 2.0 presets have (1.2: generation_settings_v1_2)."""
    from opensora.refine import parse_motion_setting

    guidance_img = check_range("guidance_img", _pick(request.guidance_img, s.guidance_img), *RANGES["guidance_img"])
    return dict(
        guidance_img=float(guidance_img),
        text_osci=bool(_pick(request.text_osci, s.text_osci)),
        image_osci=bool(_pick(request.image_osci, s.image_osci)),
        scale_temporal_osci=bool(_pick(request.scale_temporal_osci, s.scale_temporal_osci)),
        motion_score=parse_motion_setting(_pick(request.motion_score, s.motion_score)),
        fps=s.fps, shift=s.shift, flow_shift=s.flow_shift,
    )


def _step_cache(request: GenerationRequest, preset: Preset) -> dict:
    """speed, cache and compile: the preset's speed or an explicit cache, checked before any load
    (a MagCache spec needs the preset's calibration file)."""
    from opensora.sampling.cache_spec import SPEEDS, parse_cache_spec, read_mag_ratios, speed_of, speed_spec

    if preset.family == FAMILY_V1_2:
        if request.cache not in (None, "", "none") or request.speed not in (None, "quality") or request.compile:
            raise UserError(f"speed, cache and compile are for Open-Sora 2.0 presets; {preset.name} is "
                            f"{preset.family_name}: leave them out")
        return {}
    if request.speed is not None and request.speed not in SPEEDS:
        raise UserError(f"speed {request.speed!r} is not one of {', '.join(SPEEDS)}")
    if request.cache is None:
        speed = request.speed or "quality"
        spec = speed_spec(preset.speed, speed, preset.name)
    else:
        spec = parse_cache_spec(request.cache)
        speed = speed_of(preset.speed, spec, preset.name)
        if request.speed is not None and request.speed != speed:
            meant = speed_spec(preset.speed, request.speed, preset.name)
            raise UserError(f"speed {request.speed} of preset {preset.name} is {meant.text if meant else 'no cache'}, "
                            f"but cache {spec.text if spec else 'none'} was also given: give one of them")
    if spec is not None and spec.method == "magcache":
        read_mag_ratios(preset.name, preset.path.parent)  # a missing calibration fails now, not after the load
    return dict(speed=speed, cache=spec.text if spec else "", compile=bool(request.compile))


def resolve_settings(request: GenerationRequest, preset: Preset) -> GenerationSettings:
    """Fill the preset's defaults and check every value; raises UserError naming the bad one."""
    from opensora import generation_settings_v1_2 as v1_2
    from opensora.lora import check_lora_choice
    from opensora.sampling.conditioning import normalize_cond_type

    s = preset.sampler
    is_v1_2 = preset.family == FAMILY_V1_2
    prompt = check_prompt(request.prompt)
    negative = request.negative_prompt or ""
    if negative:
        check_prompt(negative, "negative prompt")
    if is_v1_2:
        v1_2.refuse_v2_fields(request, preset)
        cond_type = v1_2.check_cond_type_v1_2(request.cond_type or "t2v")
    else:
        v1_2.refuse_v1_2_fields(request, preset)
        cond_type = normalize_cond_type(request.cond_type or "t2v")
    _check_cond_type_fits(cond_type, preset)
    use_t2i2v, image_resolution = _t2i2v(request, preset, cond_type)
    # A raw mask strategy (Open-Sora 1.2) places references even with cond type t2v.
    references = _reference_list(request.reference) if cond_type != "t2v" or request.mask_strategy else []
    _check_references(cond_type, references)
    num_frames = check_frames(preset, _pick(request.num_frames, s.num_frames))
    resolution = _pick(request.resolution, s.resolution)
    aspect_ratio = _aspect_ratio(request, preset, resolution, references)
    if request.height is None and request.width is None:
        height, width = preset.image_size(resolution, aspect_ratio)
    else:
        preset.image_size(resolution, aspect_ratio)  # a bad name is still an error
        height, width = _explicit_size(preset, request.height, request.width)
    values = {
        "num_steps": _pick(request.num_steps, s.num_steps),
        "guidance": _pick(request.guidance, s.guidance),
        "num_samples": request.num_samples,
    }
    for name, value in values.items():
        check_range(name, value, *RANGES[name])
    seed = random.randint(0, SEED_MAX) if request.seed is None else check_range("seed", request.seed, *RANGES["seed"])
    if request.noise_seed is not None:
        check_range("noise_seed", request.noise_seed, *RANGES["noise_seed"])
    family_fields = (v1_2.resolve_v1_2(request, preset, cond_type, references, num_frames) if is_v1_2
                     else _v2_fields(request, s))
    loras = [LoraChoice(str(c.path), float(c.scale)) for c in request.loras]
    for choice in loras:
        check_lora_choice(choice.path, choice.scale, preset.name)
    return GenerationSettings(
        preset=preset.name, prompt=prompt, negative_prompt=negative, cond_type=cond_type, reference=references,
        num_frames=num_frames, resolution=resolution, aspect_ratio=aspect_ratio, height=height, width=width,
        num_steps=int(values["num_steps"]), guidance=float(values["guidance"]),
        seed=int(seed), noise_seed=request.noise_seed, num_samples=int(values["num_samples"]),
        refine=bool(request.refine), loras=loras, use_t2i2v=use_t2i2v, image_resolution=image_resolution,
        **_step_cache(request, preset),
        **family_fields,
    )


def video_record(settings: GenerationSettings, prepared, sample_index: int, dtype, loras: list[dict],
                 seconds: float, runtime: dict | None = None) -> dict:
    """The sidecar of one video: its one-sample settings, then what the run did with them (the
    encoder text, the prompt handling, the LoRAs really merged, dtype and time; `runtime`: how the
    pipeline ran, e.g. memory profile, T5 quantisation, fp8 weights, attention kernel)."""
    from opensora.devices import dtype_name

    handling = prepared.to_sidecar()
    model_text = handling.pop("model_text")
    handling.pop("original", None)  # = settings.prompt
    record = settings.to_dict()
    record["loras"] = [dict(lora) for lora in loras]
    record.update(model_prompt=model_text, prompt_handling=handling, sample_index=sample_index,
                  dtype=dtype_name(dtype), seconds=round(seconds, 3))
    if runtime is not None:
        record["runtime"] = dict(runtime)
    return record
