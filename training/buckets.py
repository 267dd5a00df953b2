"""Training buckets: resolution x aspect ratio x frame count, as Open-Sora's training configs
define them, read from a TOML preset (presets/buckets-*.toml).

Every batch holds samples of one bucket, so all videos in it share (T, H, W).

TOML format::

    fps = 24                    # optional: frames are taken at this rate (stride from faster
                                # sources); omit to keep each source's fps
    min_pixel_fraction = 0.8    # optional: a sample needs this fraction of a bucket's pixels

    [[resolutions]]             # one table per resolution; the largest is tried first
    name = "256px"
    aspect_ratios = [ { name = "1:1", height = 256, width = 256 }, ... ]   # multiples of 16
    frames = [ { num_frames = 1, batch_size = 45, keep_prob = 1.0 }, ... ] # 4k+1, <= 129

Assignment (``find_bucket``): resolutions from largest to smallest, skipping those whose bucket
has more than 1/min_pixel_fraction times the sample's pixels; within one, the aspect ratio nearest
to the sample's in log-ratio distance, then the largest frame count that is <= the frames the
sample has at the config's fps. Video buckets are tried first in every resolution; num_frames = 1
buckets take images, and single frames of videos too short for any video bucket.
"""

from __future__ import annotations

import logging
import math
import tomllib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

from opensora.errors import UserError

log = logging.getLogger(__name__)

MAX_FRAMES = 129  # the official 2.0 models train on at most 129 frames
SIZE_MULTIPLE = 16  # VAE downsamples 8x, the transformer patchifies 2x2
DEFAULT_MIN_PIXEL_FRACTION = 0.8  # the official bucket code's tolerance for slightly small samples

_TOP_KEYS = {"fps", "min_pixel_fraction", "resolutions"}
_RESOLUTION_KEYS = {"name", "aspect_ratios", "frames"}
_ASPECT_KEYS = {"name", "height", "width"}
_FRAME_KEYS = {"num_frames", "batch_size", "keep_prob"}


@dataclass(frozen=True)
class AspectRatioBucket:
    name: str
    height: int
    width: int

    @property
    def ratio(self) -> float:
        return self.height / self.width


@dataclass(frozen=True)
class FrameBucket:
    num_frames: int
    batch_size: int
    keep_prob: float


@dataclass(frozen=True)
class Resolution:
    name: str
    aspect_ratios: tuple[AspectRatioBucket, ...]
    frames: tuple[FrameBucket, ...]  # sorted by num_frames, ascending

    @property
    def max_pixels(self) -> int:
        return max(ar.height * ar.width for ar in self.aspect_ratios)


@dataclass(frozen=True)
class Bucket:
    """One concrete bucket: every sample in it is cropped to (num_frames, height, width)."""

    resolution: str
    aspect_ratio: str
    height: int
    width: int
    num_frames: int
    batch_size: int
    keep_prob: float

    @property
    def key(self) -> str:
        return f"{self.resolution}/{self.aspect_ratio}/{self.num_frames}f"

    @property
    def is_image(self) -> bool:
        return self.num_frames == 1


@dataclass(frozen=True)
class BucketConfig:
    resolutions: tuple[Resolution, ...]  # largest first
    fps: float | None = None
    min_pixel_fraction: float = DEFAULT_MIN_PIXEL_FRACTION
    source: str = "<code>"  # where it was loaded from, for messages

    def buckets(self) -> list[Bucket]:
        return [
            _make_bucket(res, ar, fb)
            for res in self.resolutions
            for ar in res.aspect_ratios
            for fb in res.frames
        ]

    def without_image_buckets(self) -> BucketConfig:
        """The same table with the num_frames = 1 buckets removed (video-only training)."""
        resolutions = []
        for res in self.resolutions:
            frames = tuple(fb for fb in res.frames if fb.num_frames != 1)
            if frames:
                resolutions.append(replace(res, frames=frames))
        return replace(self, resolutions=tuple(resolutions))


def _make_bucket(res: Resolution, ar: AspectRatioBucket, fb: FrameBucket) -> Bucket:
    return Bucket(
        resolution=res.name,
        aspect_ratio=ar.name,
        height=ar.height,
        width=ar.width,
        num_frames=fb.num_frames,
        batch_size=fb.batch_size,
        keep_prob=fb.keep_prob,
    )


# --------------------------------------------------------------------------- loading


def load_bucket_config(path: str | Path) -> BucketConfig:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"bucket config not found: {path}")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"bucket config {path} is not valid TOML: {e}") from e
    return bucket_config_from_dict(data, source=str(path))


def bucket_config_from_dict(data: dict, source: str = "<dict>") -> BucketConfig:
    _check_keys(data, _TOP_KEYS, f"{source}")
    fps = data.get("fps")
    if fps is not None and (not _is_number(fps) or fps <= 0):
        raise UserError(f"{source}: fps is {fps!r}; must be a number > 0, or left out")
    fraction = data.get("min_pixel_fraction", DEFAULT_MIN_PIXEL_FRACTION)
    if not _is_number(fraction) or not 0 < fraction <= 1:
        raise UserError(f"{source}: min_pixel_fraction is {fraction!r}; must be in (0, 1]")
    tables = data.get("resolutions")
    if not isinstance(tables, list) or not tables:
        raise UserError(f"{source}: needs at least one [[resolutions]] table")

    resolutions = [_parse_resolution(t, f"{source} resolutions[{i}]") for i, t in enumerate(tables)]
    names = [r.name for r in resolutions]
    duplicates = sorted(n for n, c in Counter(names).items() if c > 1)
    if duplicates:
        raise UserError(f"{source}: resolution names must be unique; repeated: {duplicates}")
    resolutions.sort(key=lambda r: r.max_pixels, reverse=True)
    return BucketConfig(
        resolutions=tuple(resolutions),
        fps=float(fps) if fps is not None else None,
        min_pixel_fraction=float(fraction),
        source=source,
    )


def _parse_resolution(table: object, where: str) -> Resolution:
    if not isinstance(table, dict):
        raise UserError(f"{where}: must be a table, got {table!r}")
    _check_keys(table, _RESOLUTION_KEYS, where)
    name = table.get("name")
    if not isinstance(name, str) or not name:
        raise UserError(f"{where}: name is {name!r}; must be a non-empty string like '256px'")
    where = f"{where} ({name})"
    ars = table.get("aspect_ratios")
    frames = table.get("frames")
    if not isinstance(ars, list) or not ars:
        raise UserError(f"{where}: aspect_ratios must be a non-empty list")
    if not isinstance(frames, list) or not frames:
        raise UserError(f"{where}: frames must be a non-empty list")

    aspect_ratios = tuple(
        _parse_aspect_ratio(a, f"{where} aspect_ratios[{i}]") for i, a in enumerate(ars)
    )
    parsed_frames = [_parse_frames(f, f"{where} frames[{i}]") for i, f in enumerate(frames)]
    frame_buckets = tuple(sorted(parsed_frames, key=lambda f: f.num_frames))
    for label, values in (
        ("aspect ratio names", [a.name for a in aspect_ratios]),
        ("num_frames values", [f.num_frames for f in frame_buckets]),
    ):
        repeated = sorted(v for v, c in Counter(values).items() if c > 1)
        if repeated:
            raise UserError(f"{where}: {label} must be unique; repeated: {repeated}")
    return Resolution(name=name, aspect_ratios=aspect_ratios, frames=frame_buckets)


def _parse_aspect_ratio(entry: object, where: str) -> AspectRatioBucket:
    if not isinstance(entry, dict):
        raise UserError(f"{where}: must be a table like {{ name = \"1:1\", height = 256, width = 256 }}")
    _check_keys(entry, _ASPECT_KEYS, where, required=_ASPECT_KEYS)
    name = entry["name"]
    if not isinstance(name, str) or not name:
        raise UserError(f"{where}: name is {name!r}; must be a string like '16:9'")
    for key in ("height", "width"):
        value = entry[key]
        if not _is_int(value) or value < SIZE_MULTIPLE or value % SIZE_MULTIPLE:
            raise UserError(
                f"{where} ({name}): {key} is {value!r}; must be a positive multiple of {SIZE_MULTIPLE}"
            )
    return AspectRatioBucket(name=name, height=entry["height"], width=entry["width"])


def _parse_frames(entry: object, where: str) -> FrameBucket:
    if not isinstance(entry, dict):
        raise UserError(
            f"{where}: must be a table like {{ num_frames = 33, batch_size = 8, keep_prob = 1.0 }}"
        )
    _check_keys(entry, _FRAME_KEYS, where, required={"num_frames", "batch_size"})
    num_frames = entry["num_frames"]
    if not _is_int(num_frames) or not (1 <= num_frames <= MAX_FRAMES and num_frames % 4 == 1):
        raise UserError(
            f"{where}: num_frames is {num_frames!r}; must be 4k+1 in [1, {MAX_FRAMES}] (1, 5, 9, ...)"
        )
    batch_size = entry["batch_size"]
    if not _is_int(batch_size) or batch_size < 1:
        raise UserError(f"{where}: batch_size is {batch_size!r}; must be an integer >= 1")
    keep_prob = entry.get("keep_prob", 1.0)
    if not _is_number(keep_prob) or not 0 < keep_prob <= 1:
        raise UserError(f"{where}: keep_prob is {keep_prob!r}; must be in (0, 1]")
    return FrameBucket(num_frames=num_frames, batch_size=batch_size, keep_prob=float(keep_prob))


def _check_keys(table: dict, allowed: set[str], where: str, required: set[str] = frozenset()) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise UserError(f"{where}: unknown keys {unknown}; allowed: {sorted(allowed)}")
    missing = sorted(required - set(table))
    if missing:
        raise UserError(f"{where}: missing keys {missing}; required: {sorted(required)}")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # TOML true is not 1


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# --------------------------------------------------------------------------- assignment


def usable_frames(num_frames: int, source_fps: float, target_fps: float | None) -> int:
    """Frames a source yields when read at target_fps (stride source/target, never upsampled).

    Conservative (floor), so the decoder always returns at least this many frames."""
    if num_frames <= 1 or target_fps is None or target_fps >= source_fps:
        return max(num_frames, 0)
    step = source_fps / target_fps
    return int(math.floor((num_frames - 1) / step + 1e-9)) + 1


def nearest_aspect_ratio(
    height: int, width: int, options: tuple[AspectRatioBucket, ...]
) -> AspectRatioBucket:
    """Nearest in log-ratio distance, so 2:1 and 1:2 are equally far from 1:1."""
    log_ratio = math.log(height / width)
    return min(options, key=lambda ar: abs(math.log(ar.ratio) - log_ratio))


def find_bucket(
    config: BucketConfig, num_frames: int, height: int, width: int, fps: float
) -> Bucket | None:
    """The bucket a sample trains in, or None when it fits none (see ``no_bucket_reason``)."""
    if num_frames < 1 or height < 1 or width < 1:
        return None
    frames = usable_frames(num_frames, fps, config.fps)
    # First pass: video buckets only, so a video trains as a video at a smaller resolution
    # rather than as one frame at a larger one; the second pass takes 1-frame buckets.
    for min_frames in (2, 1):
        for res in config.resolutions:
            ar = nearest_aspect_ratio(height, width, res.aspect_ratios)
            if height * width < config.min_pixel_fraction * ar.height * ar.width:
                continue
            fitting = [fb for fb in res.frames if min_frames <= fb.num_frames <= frames]
            if fitting:
                return _make_bucket(res, ar, fitting[-1])
    return None


def no_bucket_reason(config: BucketConfig, num_frames: int, height: int, width: int, fps: float) -> str:
    """Why ``find_bucket`` returned None, in words that name the value and the allowed range."""
    if num_frames < 1 or height < 1 or width < 1:
        return f"invalid size {num_frames} frames x {height}x{width}; all must be >= 1"
    frames = usable_frames(num_frames, fps, config.fps)
    large_enough = [
        res
        for res in config.resolutions
        if height * width >= config.min_pixel_fraction * _min_pixels(res, height, width)
    ]
    if not large_enough:
        smallest = min(config.resolutions, key=lambda r: r.max_pixels)
        ar = nearest_aspect_ratio(height, width, smallest.aspect_ratios)
        return (
            f"{height}x{width} is too small for every resolution; needs at least "
            f"{config.min_pixel_fraction:g} x {ar.height}x{ar.width} pixels ({smallest.name} {ar.name})"
        )
    counts = sorted({fb.num_frames for res in large_enough for fb in res.frames})
    at_fps = f" at {config.fps:g} fps" if config.fps is not None and frames != num_frames else ""
    return f"{num_frames} frames ({frames} usable{at_fps}) fit no bucket; frame buckets: {counts}"


def _min_pixels(res: Resolution, height: int, width: int) -> int:
    ar = nearest_aspect_ratio(height, width, res.aspect_ratios)
    return ar.height * ar.width


# --------------------------------------------------------------------------- many samples


class SizedSample(Protocol):
    num_frames: int
    height: int
    width: int
    fps: float


@dataclass
class BucketAssignment:
    buckets: list[Bucket | None]  # per sample, None = fits no bucket (never sampled)
    unassigned: list[tuple[int, str]] = field(default_factory=list)  # (sample index, reason)

    def counts(self) -> dict[str, int]:
        """Samples per bucket key, sorted by key."""
        return dict(sorted(Counter(b.key for b in self.buckets if b is not None).items()))


MAX_LOGGED_UNASSIGNED = 10  # per-sample warnings beyond this are summarised in one line


def assign_buckets(
    samples: Sequence[SizedSample],
    config: BucketConfig,
    describe: Callable[[SizedSample], str] = str,
) -> BucketAssignment:
    """Bucket of every sample; samples that fit none are logged (``describe(sample)`` names them)
    and counted in ``unassigned``."""
    assignment = BucketAssignment(buckets=[])
    for index, s in enumerate(samples):
        bucket = find_bucket(config, s.num_frames, s.height, s.width, s.fps)
        assignment.buckets.append(bucket)
        if bucket is None:
            reason = no_bucket_reason(config, s.num_frames, s.height, s.width, s.fps)
            assignment.unassigned.append((index, reason))
            if len(assignment.unassigned) <= MAX_LOGGED_UNASSIGNED:
                log.warning("skipping %s: %s", describe(s), reason)
    if assignment.unassigned:
        log.warning(
            "%d of %d samples fit no bucket in %s and are skipped",
            len(assignment.unassigned),
            len(samples),
            config.source,
        )
    return assignment
