"""History tab: past outputs read back from the output folder (so it survives restarts), each with
its settings sidecar and a "Reuse settings" button that fills the Text → Video or Image → Video form."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from app.config import AppConfig
from opensora.io.outputs import list_outputs


@dataclass
class HistoryTab:
    gallery: gr.Gallery
    shown: gr.State  # output indices in gallery order
    selected: gr.State  # sidecar of the selected video (dict or None)
    reuse: gr.Button


def history_items(output_dir: Path, limit: int) -> tuple[list[tuple[str, str]], list[int]]:
    """(gallery items (mp4, caption), their output indices), newest first."""
    entries = list_outputs(output_dir)[:limit]
    items = []
    for entry in entries:
        settings = entry["settings"] or {}
        text = entry["text"] or settings.get("prompt") or ""
        kind = settings.get("cond_type", "?")
        items.append((str(entry["path"]), f"#{entry['index']:04d} · {kind} · {text[:48]}"))
    return items, [e["index"] for e in entries]


def read_sidecar(output_dir: Path, index: int) -> dict | None:
    for entry in list_outputs(output_dir):
        if entry["index"] == index:
            return entry["settings"]
    return None


def build_history_tab(config: AppConfig) -> HistoryTab:
    items, indices = history_items(config.output_dir, config.history_limit)
    gr.Markdown(f"Newest {config.history_limit} videos in `{config.output_dir}`. Click one to see its settings.")
    with gr.Row():
        with gr.Column(scale=2):
            gallery = gr.Gallery(items, label="History", columns=4, height=520, allow_preview=True,
                                 elem_classes=["history-gallery"])
            refresh = gr.Button("Refresh", size="sm")
        with gr.Column(scale=1):
            info = gr.Markdown("Select a video.")
            sidecar = gr.Code(label="Settings (sidecar)", language="json", interactive=False, max_lines=30)
            reuse = gr.Button("Reuse settings", variant="primary", interactive=False)
    shown = gr.State(indices)
    selected = gr.State(None)

    def select(indices: list[int], evt: gr.SelectData):
        index = indices[evt.index] if evt.index is not None and evt.index < len(indices) else None
        settings = None if index is None else read_sidecar(config.output_dir, index)
        if settings is None:
            return None, f"#{index}: no readable settings sidecar", "", gr.update(interactive=False)
        return (settings, f"**#{index:04d}** · `{settings.get('cond_type')}` · seed {settings.get('seed')}",
                json.dumps(settings, indent=2, ensure_ascii=False), gr.update(interactive=True))

    gallery.select(select, shown, [selected, info, sidecar, reuse], api_visibility="private", queue=False)
    refresh.click(lambda: history_items(config.output_dir, config.history_limit), None, [gallery, shown],
                  api_visibility="private")
    return HistoryTab(gallery, shown, selected, reuse)


def refresh_event_args(config: AppConfig, tab: HistoryTab) -> dict:
    """Arguments for `.then(**...)` that reload the gallery after a generation."""
    return dict(fn=lambda: history_items(config.output_dir, config.history_limit), inputs=None,
                outputs=[tab.gallery, tab.shown], api_visibility="private", show_progress="hidden")
