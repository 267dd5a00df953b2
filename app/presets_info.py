"""Which presets the UI offers: selectable ones (files present) and what the others miss."""

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from opensora.checkpoints import FileStatus, default_preset_name, file_status, preset_files
from opensora.errors import UserError
from opensora.presets import FAMILY_V2, Preset, available_presets, load_preset


@lru_cache(maxsize=None)
def preset(name: str) -> Preset:
    return load_preset(name)


@dataclass
class PresetAvailability:
    selectable: list[str]  # every file present and readable (or random weights)
    missing: dict[str, list[str]]  # preset -> missing file paths, broken ones as "path (what is wrong)"

    @property
    def trainable(self) -> list[str]:
        """Selectable presets the trainer takes (Open-Sora 2.0 ones; 1.2 is generation only)."""
        return [name for name in self.selectable if preset(name).family == FAMILY_V2]

    def help_markdown(self, ckpt_dir: Path) -> str:
        """Why the other presets cannot be picked, and how to get them."""
        if not self.missing:
            return ""
        lines = ["**Other presets** (files missing or broken in `%s`):" % ckpt_dir]
        for name, paths in self.missing.items():
            shown = ", ".join(f"`{p}`" for p in paths)
            how = preset(name).download
            lines.append(f"- `{name}`: needs {shown}" + (f" — get them with `{how}`" if how else ""))
        return "\n".join(lines)


def availability(ckpt_dir: Path) -> PresetAvailability:
    selectable, missing = [], {}
    for name in available_presets():
        try:
            absent = [s.describe() for s in file_status(preset(name), ckpt_dir) if not s.ready]
        except UserError:  # a broken TOML must not take the app down; it just is not offered
            continue
        if absent:
            missing[name] = absent
        else:
            selectable.append(name)
    return PresetAvailability(selectable, missing)


def startup_preset(requested: str | None, ckpt_dir: Path) -> str:
    return requested or default_preset_name(ckpt_dir)


def check_selectable(name: str, ckpt_dir: Path) -> Preset:
    """The preset (a name, or a TOML file as for the CLI), or a UserError that names the missing
    files (API callers can ask for any)."""
    if not name:
        raise UserError("pick a model preset")
    if name.endswith(".toml"):
        p = preset(name)
        missing = [s.describe() for s in file_status(p, ckpt_dir) if not s.ready]
    else:
        info = availability(ckpt_dir)
        if name not in info.selectable and name not in info.missing:
            raise UserError(f"unknown preset {name!r}; available: {', '.join(info.selectable)}")
        p, missing = preset(name), info.missing.get(name, [])
    if missing:
        raise UserError(
            f"preset {name} cannot run: missing {', '.join(missing)}"
            + (f"; get them with `{p.download}`" if p.download else "")
        )
    return p


def flux_available(p: Preset, ckpt_dir: Path) -> bool:
    """Whether the preset offers text -> image -> video here: it has a [flux] part and FLUX's two files
    are ready in `ckpt_dir` (a random-weight preset builds a tiny FLUX)."""
    if p.flux is None:
        return False
    return all(s.ready for s in file_status(p, ckpt_dir) if s.role in ("flux", "flux_ae"))


def banner_markdown(active: str, ckpt_dir: Path) -> str:
    """Top-of-page line: which model runs, and a warning when it is not an official one."""
    p = preset(active)
    text = f"**Model:** `{active}` ({p.family_name}) — {p.description}"
    if flux_available(p, ckpt_dir):
        text += " · text → image → video through FLUX in the Text → Video tab"
    if p.weights != "official":
        fallback = "the bundled demo model" if p.weights == "bundled" else "a tiny model with random weights (noise-like videos)"
        downloads = official_downloads()
        how = (" (" + "; ".join(f"{family}: `{command}`" for family, command in downloads.items()) + ")"
               if downloads else "")
        broken = broken_official_files(ckpt_dir)
        if broken:
            text += (
                f"\n\n**The official checkpoint in `{ckpt_dir}` cannot be used:** "
                + "; ".join(f"`{s.path.name}`: {s.problem}" for s in broken)
                + f". Running {fallback} instead. Replace those files{how} and restart to use the real model."
            )
        else:
            text += (
                f"\n\n**No official Open-Sora 2.0 or 1.2 checkpoint found in `{ckpt_dir}`:** running {fallback}. "
                f"Put the official files there{how} and restart to use the real model."
            )
    return text


def official_downloads() -> dict[str, str]:
    """{family name: download command} of the first official preset of each family."""
    downloads: dict[str, str] = {}
    # The plain model of a family first: its t2i2v and high-compression presets need more files.
    for name in sorted(available_presets(), key=lambda n: len(preset_files(preset(n)))):
        p = preset(name)
        if p.weights == "official" and p.download:
            downloads.setdefault(p.family_name, p.download)
    return dict(sorted(downloads.items(), reverse=True))  # Open-Sora 2.0 first


def broken_official_files(ckpt_dir: Path) -> list[FileStatus]:
    """Official files that are there but do not read (0 bytes, cut short, empty config.json)."""
    seen, broken = set(), []
    for name in available_presets():
        if preset(name).weights != "official":
            continue
        for status in file_status(preset(name), ckpt_dir):
            if status.present and status.problem and status.path not in seen:
                seen.add(status.path)
                broken.append(status)
    return broken
