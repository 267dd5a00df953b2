"""The settings form's list of LoRAs: MAX_LORAS rows of (picker, weight).

Row k appears once row k-1 holds a LoRA (that is "add"); picking "none" removes a row's LoRA and the
ones below move up, so the chosen LoRAs are always the first rows. The pipeline merges them all, each
at its own weight; the CLI takes any number (`--lora FILE:SCALE`, repeated).
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from app.config import AppConfig
from app.training_runs import lora_choices
from opensora.generation_settings import LoraChoice

MAX_LORAS = 3
# The form's field names (SettingsForm.control, the tabs' function parameters), row by row.
PICKERS = tuple("lora" if k == 0 else f"lora_{k + 1}" for k in range(MAX_LORAS))
SCALES = tuple("lora_scale" if k == 0 else f"lora_scale_{k + 1}" for k in range(MAX_LORAS))
DEFAULT_SCALE = 1.0


@dataclass
class LoraSlots:
    rows: list[gr.Row]
    pickers: list[gr.Dropdown]
    scales: list[gr.Slider]


def build_lora_slots(config: AppConfig, preset_name: str) -> LoraSlots:
    choices = lora_choices(config.runs_dir, preset=preset_name)
    rows, pickers, scales = [], [], []
    for k in range(MAX_LORAS):
        name = "LoRA" if k == 0 else f"LoRA {k + 1}"
        with gr.Row(visible=k == 0, elem_classes=["lora-row"]) as row:
            info = (f"fine-tuned for this preset in {config.runs_dir.name}/ (Fine-tune tab); once picked, a row "
                    "for another appears; none removes it") if k == 0 else "none removes it"
            pickers.append(gr.Dropdown(choices, value="", label=name, info=info, scale=2))
            scales.append(gr.Slider(0, 2, value=DEFAULT_SCALE, step=0.05, label=f"{name} scale", scale=1))
        rows.append(row)
    slots = LoraSlots(rows, pickers, scales)
    private = dict(api_visibility="private", queue=False, show_progress="hidden")
    for picker in pickers:
        picker.input(compacted_updates, [*pickers, *scales], [*pickers, *scales], **private)
        # .change also follows values set by code (reuse, preset switch), so the rows shown always match.
        picker.change(row_visibility, pickers, rows[1:], **private)
    return slots


def chosen_loras(paths: list[str], scales: list[float]) -> list[LoraChoice]:
    """The rows that hold a LoRA, in order."""
    return [LoraChoice(path, float(scale)) for path, scale in zip(paths, scales) if path]


def slot_values(loras: list[LoraChoice]) -> tuple[list[str], list[float]]:
    """(paths, scales) of the MAX_LORAS rows for `loras` (empty rows after them)."""
    if len(loras) > MAX_LORAS:
        gr.Warning(f"that video used {len(loras)} LoRAs; the form holds {MAX_LORAS}: the first {MAX_LORAS} are "
                   "filled (python -m opensora generate takes any number)")
    kept = loras[:MAX_LORAS]
    paths = [lora.path for lora in kept] + [""] * (MAX_LORAS - len(kept))
    scales = [lora.scale for lora in kept] + [DEFAULT_SCALE] * (MAX_LORAS - len(kept))
    return paths, scales


def compacted_updates(*values) -> list:
    """After the user picks in a row: the chosen LoRAs moved to the first rows (a "none" row removed).
    Nothing is sent back when no row moves, so a weight typed meanwhile is not reset to the old one."""
    before = list(values[:MAX_LORAS])
    paths, scales = slot_values(chosen_loras(before, list(values[MAX_LORAS:])))
    if paths == before:
        return [gr.update() for _ in range(2 * MAX_LORAS)]
    return [*paths, *scales]


def row_visibility(*paths: str) -> list:
    """Rows 2.. shown when the row above holds a LoRA, or when they hold one themselves."""
    return [gr.update(visible=bool(paths[k - 1] or paths[k])) for k in range(1, MAX_LORAS)]


def picker_updates(runs_dir, preset_name: str, paths: list[str], reused: bool = False) -> list:
    """The pickers for preset `preset_name`: its LoRAs offered and the picked ones kept (moving up);
    on a preset switch a LoRA made for another preset is dropped, on reuse (`reused`) the video's
    LoRAs stay listed wherever they are."""
    offered = {value for _, value in lora_choices(runs_dir, preset=preset_name)}
    kept = [path for path in paths if path and (reused or path in offered)]
    kept = (kept + [""] * MAX_LORAS)[:MAX_LORAS]
    return [gr.update(choices=lora_choices(runs_dir, keep=path, preset=preset_name), value=path) for path in kept]
