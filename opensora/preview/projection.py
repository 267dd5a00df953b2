"""The latent -> RGB preview map of a preset's VAE, stored as data in `presets/preview/NAME.toml`.

rgb = bias + sum over latent channels c of latent[c] * weights[c], per latent pixel, in the VAE's
pixel range [-1, 1]. A few numbers per channel instead of a VAE decode: what makes a preview every
few steps affordable. Reading it stays torch-free (the app and the CLI read presets without torch).
"""

import tomllib
from dataclasses import dataclass
from pathlib import Path

from opensora.errors import UserError
from opensora.presets import PRESET_DIR, Preset

PREVIEW_DATA_DIR = PRESET_DIR / "preview"


@dataclass
class PreviewProjection:
    weights: list[list[float]]  # one [r, g, b] row per latent channel
    bias: list[float]  # [r, g, b]
    made_by: str = ""  # the command that fitted it
    heldout_psnr_db: float | None = None  # on clips the fit did not see, against their pixels at latent size

    @property
    def latent_channels(self) -> int:
        return len(self.weights)


def preview_data_name(preset: Preset) -> str:
    """Which file holds the map. Official VAE files are shared by several presets (the 256px and
    768px presets use one hunyuan_vae.safetensors), so those are named after the file; a bundled or
    random VAE belongs to its preset."""
    if preset.weights != "official":
        return preset.name
    return Path(preset.files.vae).with_suffix("").as_posix().replace("/", "-")


def preview_data_path(preset: Preset, folder: Path | None = None) -> Path:
    return (folder or PREVIEW_DATA_DIR) / f"{preview_data_name(preset)}.toml"


def read_projection(path: Path) -> PreviewProjection:
    try:
        data = tomllib.loads(Path(path).read_text())
    except tomllib.TOMLDecodeError as err:
        raise UserError(f"preview data {path} is not valid TOML: {err}") from None
    weights, bias = data.get("weights"), data.get("bias")
    rows_ok = isinstance(weights, list) and weights and all(isinstance(r, list) and len(r) == 3 for r in weights)
    if not rows_ok or not (isinstance(bias, list) and len(bias) == 3):
        raise UserError(f"preview data {path}: needs `weights` (one [r, g, b] row per latent channel) and "
                        "`bias` ([r, g, b])")
    return PreviewProjection([[float(v) for v in row] for row in weights], [float(v) for v in bias],
                             data.get("made_by", ""), data.get("heldout_psnr_db"))


def load_projection(preset: Preset, folder: Path | None = None) -> PreviewProjection | None:
    """The preset's map, or None when no one has fitted it yet (the preview is then off)."""
    path = preview_data_path(preset, folder)
    return read_projection(path) if path.is_file() else None


def projection_toml(projection: PreviewProjection, description: str) -> str:
    """The data file's text (`description` becomes its leading comment)."""
    def numbers(values: list[float]) -> str:
        return "[" + ", ".join(f"{v:.6g}" for v in values) + "]"

    lines = [f"# {line}".rstrip() for line in description.splitlines()]
    lines += [
        "# rgb = bias + sum_c latent[c] * weights[c] per latent pixel, pixels in [-1, 1] (opensora/preview/projection.py)",
        f'made_by = "{projection.made_by}"',
    ]
    if projection.heldout_psnr_db is not None:
        lines.append(f"heldout_psnr_db = {projection.heldout_psnr_db:.2f}")
    lines.append(f"bias = {numbers(projection.bias)}")
    lines.append("weights = [")
    lines += [f"  {numbers(row)},  # channel {c}" for c, row in enumerate(projection.weights)]
    lines.append("]")
    return "\n".join(lines) + "\n"
