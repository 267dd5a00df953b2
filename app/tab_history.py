"""History tab: past outputs read back from the output folder (so it survives restarts), a page at a
time, searchable by prompt. A selected video shows its settings sidecar and can be reused ("Reuse
settings" fills the Text → Video or Image → Video form), sent to Image → Video (its last frame as the
reference), extended into a longer video, or deleted (video, sidecar and results.csv row)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from app.config import AppConfig
from opensora.errors import UserError
from opensora.io.outputs import OutputWriter, list_outputs, save_last_frame


@dataclass
class HistoryTab:
    gallery: gr.Gallery
    shown: gr.State  # output indices in gallery order
    selected: gr.State  # sidecar of the selected video (dict or None)
    reuse: gr.Button
    selected_index: gr.State | None = None  # output index of the selected video (int or None)
    send_i2v: gr.Button | None = None
    page: gr.State | None = None  # page number shown (0 = newest)
    search: gr.Textbox | None = None
    page_label: gr.Markdown | None = None
    newer: gr.Button | None = None
    older: gr.Button | None = None

    def page_outputs(self) -> list:
        return [self.gallery, self.shown, self.page, self.page_label, self.newer, self.older]


@dataclass
class HistoryPage:
    items: list[tuple[str, str]]  # (mp4, caption), newest first
    indices: list[int]
    page: int
    pages: int
    matched: int  # videos that match the search (all videos without one)
    total: int

    def label(self, query: str = "") -> str:
        if not self.total:
            return "No videos yet."
        found = f"{self.matched} of {self.total} videos match “{query.strip()}”" if query.strip() else \
            f"{self.total} video{'s' if self.total > 1 else ''}"
        return f"Page {self.page + 1} of {self.pages} · {found}"


def _caption_text(entry: dict) -> str:
    return entry["text"] or (entry["settings"] or {}).get("prompt") or ""


def matches(entry: dict, query: str) -> bool:
    """Every word of `query` is in the video's prompt (any case)."""
    text = _caption_text(entry).lower()
    return all(word in text for word in query.lower().split())


def history_page(output_dir: Path, limit: int, page: int = 0, query: str = "") -> HistoryPage:
    """Page `page` (clamped to those there are) of the videos whose prompt matches `query`, newest first."""
    entries = list_outputs(output_dir)
    found = [e for e in entries if matches(e, query or "")]
    pages = max(1, math.ceil(len(found) / limit))
    page = min(max(0, int(page or 0)), pages - 1)
    shown = found[page * limit:(page + 1) * limit]
    items = []
    for entry in shown:
        kind = (entry["settings"] or {}).get("cond_type", "?")
        extended = " · extended" if (entry["settings"] or {}).get("extension") else ""
        items.append((str(entry["path"]), f"#{entry['index']:04d} · {kind}{extended} · {_caption_text(entry)[:48]}"))
    return HistoryPage(items, [e["index"] for e in shown], page, pages, len(found), len(entries))


def history_items(output_dir: Path, limit: int) -> tuple[list[tuple[str, str]], list[int]]:
    """(gallery items (mp4, caption), their output indices) of the newest `limit` videos."""
    first = history_page(output_dir, limit)
    return first.items, first.indices


def read_sidecar(output_dir: Path, index: int) -> dict | None:
    for entry in list_outputs(output_dir):
        if entry["index"] == index:
            return entry["settings"]
    return None


def page_updates(config: AppConfig, page: int, query: str) -> list:
    """Values for `HistoryTab.page_outputs()`."""
    found = history_page(config.output_dir, config.history_limit, page, query)
    return [found.items, found.indices, found.page, found.label(query or ""),
            gr.update(interactive=found.page > 0), gr.update(interactive=found.page < found.pages - 1)]


def default_extend_seconds(settings: dict, video: Path) -> float:
    """The video's length plus one full part (what one Extend click adds by default)."""
    from opensora.extend import OVERLAP_FRAMES, part_frames_rule
    from opensora.io.video import probe_video
    from opensora.presets import load_preset

    info = probe_video(video)
    try:
        p = load_preset(settings.get("preset") or "")
        frames, fps = part_frames_rule(p)[0], p.sampler.fps
    except UserError:
        return round(2 * info.num_frames / info.fps, 2)
    return round((info.num_frames + frames - OVERLAP_FRAMES) / fps, 2)


def build_history_tab(config: AppConfig, extend_handler=None) -> HistoryTab:
    """`extend_handler`: an `app.extend_handler.ExtendHandler` (None: no Extend panel)."""
    # Filled when a page opens (`refresh_event_args` on load): a listing made here would be the app's start-up
    # snapshot, shown to every later visitor until their own refresh arrives.
    gr.Markdown(f"Videos in `{config.output_dir}`, {config.history_limit} a page, newest first. "
                "Click one to see its settings.")
    with gr.Row():
        with gr.Column(scale=2):
            with gr.Row():
                search = gr.Textbox(placeholder="Search prompts (Enter)", show_label=False, scale=3,
                                    elem_classes=["history-search"])
                newer = gr.Button("← Newer", size="sm", interactive=False, scale=1, elem_classes=["history-newer"])
                older = gr.Button("Older →", size="sm", interactive=False, scale=1, elem_classes=["history-older"])
            page_label = gr.Markdown("Loading…", elem_classes=["history-page"])
            gallery = gr.Gallery([], label="History", columns=4, height=520, allow_preview=True,
                                 elem_classes=["history-gallery"])
            refresh = gr.Button("Refresh", size="sm")
        with gr.Column(scale=1):
            info = gr.Markdown("Select a video.", elem_classes=["history-info"])
            sidecar = gr.Code(label="Settings (sidecar)", language="json", interactive=False, max_lines=30)
            with gr.Row():
                reuse = gr.Button("Reuse settings", variant="primary", interactive=False)
                send_i2v = gr.Button("Send to I2V", interactive=False, elem_classes=["history-send-i2v"])
                delete = gr.Button("Delete", variant="stop", interactive=False, elem_classes=["history-delete"])
            with gr.Accordion("Extend this video", open=False, visible=extend_handler is not None):
                extend_prompt = gr.Textbox(label="Prompt for what comes next", lines=2,
                                           elem_classes=["extend-prompt"])
                extend_seconds = gr.Number(label="Length of the finished video (seconds)", minimum=0.1, maximum=3600,
                                           elem_classes=["extend-seconds"])
                with gr.Row():
                    extend = gr.Button("Extend", variant="primary", interactive=False,
                                       elem_classes=["extend-button"])
                    extend_cancel = gr.Button("Cancel", variant="stop", size="sm")
                extend_status = gr.Markdown("", elem_classes=["extend-status"])
    shown, page = gr.State([]), gr.State(0)
    selected, selected_index = gr.State(None), gr.State(None)
    delete_armed = gr.State(None)  # the index whose Delete was clicked once (the second click deletes)
    tab = HistoryTab(gallery, shown, selected, reuse, selected_index, send_i2v, page, search, page_label, newer,
                     older)
    private = dict(api_visibility="private", queue=False)
    actions = [reuse, send_i2v, delete, extend]

    def select(indices: list[int], evt: gr.SelectData):
        index = indices[evt.index] if evt.index is not None and evt.index < len(indices) else None
        settings = None if index is None else read_sidecar(config.output_dir, index)
        if index is None:
            return None, None, "Select a video.", "", *[gr.update(interactive=False)] * 4, gr.update(), gr.update(), None
        delete_button = gr.update(value="Delete", interactive=True)
        if settings is None:  # a broken sidecar: the video can still be sent on or deleted
            return (None, index, f"#{index:04d}: no readable settings sidecar", "", gr.update(interactive=False),
                    gr.update(interactive=True), delete_button, gr.update(interactive=False), gr.update(), gr.update(),
                    None)
        video = config.output_dir / f"{index:04d}.mp4"
        heading = f"**#{index:04d}** · `{settings.get('cond_type')}` · seed {settings.get('seed')}"
        return (settings, index, heading, json.dumps(settings, indent=2, ensure_ascii=False),
                gr.update(interactive=True), gr.update(interactive=True), delete_button, gr.update(interactive=True),
                settings.get("prompt", ""), default_extend_seconds(settings, video), None)

    gallery.select(select, shown, [selected, selected_index, info, sidecar, *actions, extend_prompt, extend_seconds,
                                   delete_armed], **private)

    def delete_clicked(index: int | None, armed: int | None, page_number: int, query: str):
        keep = [gr.update()] * (len(tab.page_outputs()) + 4)
        if index is None:
            return index, armed, "Select a video.", gr.update(), *keep
        if armed != index:  # the first click only asks
            return (index, index, f"Click **Delete** again to delete #{index:04d} for good.", gr.update(),
                    gr.update(value=f"Delete #{index:04d} for good"), *keep[1:])
        try:
            OutputWriter(config.output_dir).delete(index)
        except UserError as err:
            raise gr.Error(str(err), print_exception=False) from None
        off = gr.update(interactive=False)  # the selection is gone, and with it what its buttons act on
        return (None, None, f"Deleted #{index:04d}.", "", gr.update(value="Delete", interactive=False), off, off, off,
                *page_updates(config, page_number, query))

    # Queued (private): an error toast reaches the page only through the queue.
    delete.click(delete_clicked, [selected_index, delete_armed, page, search],
                 [selected_index, delete_armed, info, sidecar, delete, reuse, send_i2v, extend, *tab.page_outputs()],
                 api_visibility="private")

    search.submit(lambda query: page_updates(config, 0, query), search, tab.page_outputs(), **private)
    newer.click(lambda n, query: page_updates(config, n - 1, query), [page, search], tab.page_outputs(), **private)
    older.click(lambda n, query: page_updates(config, n + 1, query), [page, search], tab.page_outputs(), **private)
    refresh.click(lambda n, query: page_updates(config, n, query), [page, search], tab.page_outputs(),
                  api_visibility="private")

    if extend_handler is not None:
        extended = extend.click(extend_handler.run, [selected_index, extend_prompt, extend_seconds], extend_status,
                                api_visibility="private", concurrency_limit=1, concurrency_id="extend")
        extended.success(**refresh_event_args(config, tab))
        extend_cancel.click(extend_handler.cancel, None, extend_status, **private)
    return tab


def send_to_i2v(config: AppConfig, index: int | None) -> tuple[str, str]:
    """(the video's last frame as a PNG in OUTPUT_DIR/references/, its prompt) for the Image → Video tab."""
    if index is None:
        raise gr.Error("select a video in History first", print_exception=False)
    video = config.output_dir / f"{index:04d}.mp4"
    try:
        image = save_last_frame(video, config.output_dir)
    except UserError as err:
        raise gr.Error(str(err), print_exception=False) from None
    return image, (read_sidecar(config.output_dir, index) or {}).get("prompt", "")


def refresh_event_args(config: AppConfig, tab: HistoryTab) -> dict:
    """Arguments for `.then(**...)` / `.load(**...)` that re-read the gallery's current page after a
    generation (or when the page opens)."""
    return dict(fn=lambda n, query: page_updates(config, n, query), inputs=[tab.page, tab.search],
                outputs=tab.page_outputs(), api_visibility="private", show_progress="hidden")
