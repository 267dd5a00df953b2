"""`--cache NAME[:PARAM=V,...]` and `--speed quality|balanced|fast`: which step cache a video uses.

Torch-free: specs are parsed and checked with the rest of the settings, before any model loads
(`opensora.sampling.step_cache` turns a spec into diffusers' hook config). Each method is one of
diffusers' cache hooks on the MMDiT; its parameters are the few that matter, under short names:

    first-block:threshold=0.1                      FirstBlockCacheConfig
    taylorseer:interval=3,warmup=3,order=1,lite=1  TaylorSeerCacheConfig
    magcache:threshold=0.06,max-skip=3,retention=0.2   MagCacheConfig (ratios: calibrate-cache)
    pab:every=2,tmin=100,tmax=800                  PyramidAttentionBroadcastConfig
    fastercache:every=2,tmin=0,tmax=681,weight=0.5     FasterCacheConfig (attention part only)

A spec's `text` names every parameter, so the sidecar says exactly what ran.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from opensora.errors import UserError

SPEEDS = ("quality", "balanced", "fast")  # quality: no cache; the others: the preset's [speed] specs
CUSTOM_SPEED = "custom"  # a --cache spec that is none of the preset's speeds


@dataclass(frozen=True)
class Param:
    name: str
    kind: type  # int or float
    low: float
    high: float
    default: float
    means: str


@dataclass(frozen=True)
class CacheMethod:
    name: str
    params: tuple[Param, ...]
    means: str


_TIMESTEPS = "timestep range (0 = clean, 1000 = noise) where it may reuse"
CACHE_METHODS = (
    CacheMethod("first-block", (
        Param("threshold", float, 0.0, 1.0, 0.05, "skip the other blocks while the first block's residual "
              "changes by less than this (relative)"),
    ), "First-Block-Cache: runs block 1, reuses the rest when its output barely moved"),
    CacheMethod("taylorseer", (
        Param("interval", int, 1, 20, 3, "one full step every INTERVAL steps, Taylor-predicted in between"),
        Param("warmup", int, 0, 100, 3, "first steps always computed"),
        Param("order", int, 1, 3, 1, "Taylor order of the prediction"),
        Param("lite", int, 0, 1, 1, "1: predict the output projection and skip every block; 0: predict "
              "each attention layer (MLPs still run)"),
    ), "TaylorSeer: predicts skipped steps from the last full ones"),
    CacheMethod("magcache", (
        Param("threshold", float, 0.0, 1.0, 0.06, "accumulated magnitude error allowed before a full step"),
        Param("max-skip", int, 1, 50, 3, "most steps skipped in a row"),
        Param("retention", float, 0.0, 1.0, 0.2, "fraction of the first steps never skipped"),
    ), "MagCache: skips steps whose residual magnitude the preset's calibration predicts"),
    CacheMethod("pab", (
        Param("every", int, 2, 50, 2, "attention computed every EVERY steps, reused in between"),
        Param("tmin", int, 0, 1000, 100, f"lower end of the {_TIMESTEPS}"),
        Param("tmax", int, 0, 1000, 800, f"upper end of the {_TIMESTEPS}"),
    ), "Pyramid Attention Broadcast: reuses attention outputs between steps"),
    CacheMethod("fastercache", (
        Param("every", int, 2, 50, 2, "attention computed every EVERY steps, extrapolated in between"),
        Param("tmin", int, 0, 1000, 0, f"lower end of the {_TIMESTEPS}"),
        Param("tmax", int, 0, 1000, 681, f"upper end of the {_TIMESTEPS}"),
        Param("weight", float, 0.0, 1.0, 0.5, "extrapolation weight of the last attention change"),
    ), "FasterCache: extrapolates attention outputs between steps"),
)
METHOD_NAMES = tuple(m.name for m in CACHE_METHODS)


def cache_method(name: str) -> CacheMethod:
    for method in CACHE_METHODS:
        if method.name == name:
            return method
    raise UserError(f"unknown cache method {name!r}; allowed: {', '.join(METHOD_NAMES)}")


def _format(value: float) -> str:
    return f"{value:g}"


@dataclass(frozen=True)
class CacheSpec:
    method: str
    values: tuple[tuple[str, float], ...]  # (param, value) for every param of the method, in its order

    def __getitem__(self, param: str) -> float:
        return dict(self.values)[param]

    @property
    def text(self) -> str:
        return f"{self.method}:" + ",".join(f"{k}={_format(v)}" for k, v in self.values)


def _parse_value(method: CacheMethod, param: Param, raw: str) -> float:
    where = f"cache {method.name} parameter {param.name}"
    try:
        value = param.kind(raw) if param.kind is float else int(raw)
    except ValueError:
        kind = "an integer" if param.kind is int else "a number"
        raise UserError(f"{where} {raw!r} is not {kind}; allowed {_format(param.low)} to {_format(param.high)}") \
            from None
    if not param.low <= value <= param.high:
        raise UserError(f"{where} {raw!r} is out of range: allowed {_format(param.low)} to {_format(param.high)}")
    return value


def parse_cache_spec(text: str) -> CacheSpec | None:
    """`NAME[:PARAM=V,...]` -> CacheSpec (missing parameters take their defaults); "" or "none" -> None."""
    text = (text or "").strip()
    if text in ("", "none", "off"):
        return None
    name, _, rest = text.partition(":")
    method = cache_method(name.strip())
    allowed = {p.name: p for p in method.params}
    given: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, eq, raw = item.partition("=")
        key = key.strip()
        if not eq or key not in allowed:
            raise UserError(f"cache {method.name}: {item!r} is not PARAM=VALUE with PARAM one of "
                            f"{', '.join(allowed)}")
        given[key] = _parse_value(method, allowed[key], raw.strip())
    values = tuple((p.name, given.get(p.name, p.default)) for p in method.params)
    spec = CacheSpec(method.name, values)
    if "tmin" in allowed and spec["tmin"] >= spec["tmax"]:
        raise UserError(f"cache {method.name}: tmin {_format(spec['tmin'])} must be below tmax {_format(spec['tmax'])}")
    return spec


def describe_methods() -> str:
    """Every method and its parameters with ranges and defaults, for --help."""
    lines = []
    for method in CACHE_METHODS:
        params = ", ".join(f"{p.name}={_format(p.default)} ({_format(p.low)}-{_format(p.high)})" for p in method.params)
        lines.append(f"{method.name}: {params}")
    return "; ".join(lines)


def speed_spec(speeds, speed: str, preset_name: str) -> CacheSpec | None:
    """The spec `speed` means for a preset whose [speed] table is `speeds` (SpeedSettings or None)."""
    if speed not in SPEEDS:
        raise UserError(f"speed {speed!r} is not one of {', '.join(SPEEDS)}")
    if speed == "quality":
        return None
    text = getattr(speeds, speed, "") if speeds is not None else ""
    if not text:
        raise UserError(f"preset {preset_name} has no measured {speed!r} setting (no [speed] {speed} in its TOML); "
                        f"use --speed quality, or an explicit --cache ({', '.join(METHOD_NAMES)})")
    return parse_cache_spec(text)


def offered_speeds(speeds) -> list[str]:
    """The speeds a preset offers: quality, and those its [speed] table names."""
    return [level for level in SPEEDS if level == "quality" or (speeds is not None and getattr(speeds, level))]


def speed_of(speeds, spec: CacheSpec | None, preset_name: str) -> str:
    """The speed whose step cache is `spec` for a preset's [speed] table (quality for None), else custom."""
    for level in offered_speeds(speeds):
        if speed_spec(speeds, level, preset_name) == spec:
            return level
    return CUSTOM_SPEED


# ---------------------------------------------------------------------------------------------
# MagCache calibration data: cache/<preset>-magcache.toml beside the preset's TOML (presets/cache/),
# written by `calibrate-cache`.


def calibration_path(preset_name: str, preset_dir: Path) -> Path:
    return Path(preset_dir) / "cache" / f"{preset_name}-magcache.toml"


def read_mag_ratios(preset_name: str, preset_dir: Path) -> list[float]:
    """The calibrated MagCache ratios of a preset (one per step of its calibration run)."""
    path = calibration_path(preset_name, preset_dir)
    if not path.is_file():
        raise UserError(f"cache magcache needs the calibration of preset {preset_name} ({path} is missing): "
                        f"run `python -m opensora calibrate-cache --preset {preset_name}` once")
    try:
        ratios = tomllib.loads(path.read_text()).get("ratios")
    except tomllib.TOMLDecodeError as err:
        raise UserError(f"{path} is not valid TOML: {err}; rerun calibrate-cache") from None
    if not isinstance(ratios, list) or len(ratios) < 2 or not all(isinstance(r, (int, float)) for r in ratios):
        raise UserError(f"{path} has no list of ratios; rerun `python -m opensora calibrate-cache --preset "
                        f"{preset_name}`")
    return [float(r) for r in ratios]


def write_mag_ratios(preset_name: str, preset_dir: Path, ratios: list[float], num_steps: int, prompts: list[str],
                     seeds: list[int]) -> Path:
    """Store calibration ratios as TOML beside the preset (plain text: reviewable, diffable)."""
    path = calibration_path(preset_name, preset_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    quoted = ", ".join('"' + p.replace("\\", "\\\\").replace('"', '\\"') + '"' for p in prompts)
    path.write_text(
        f"# MagCache ratios of preset {preset_name}: mean over the runs below of norm(residual_t) / norm(residual_t-1)\n"
        f"# per step. Written by `python -m opensora calibrate-cache --preset {preset_name}`; rerun it after\n"
        "# retraining the model or changing its sampler.\n"
        f'preset = "{preset_name}"\n'
        f"num_steps = {num_steps}\n"
        f"prompts = [{quoted}]\n"
        f"seeds = [{', '.join(str(s) for s in seeds)}]\n"
        f"ratios = [{', '.join(f'{r:.5f}' for r in ratios)}]\n"
    )
    return path
