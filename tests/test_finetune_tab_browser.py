"""The fine-tune tab as a new user sees it, in real Chromium (Debian's /usr/bin/chromium through
Playwright; issues #29 and #27.3). One `python launch.py --preset demo` for the module.

What is looked at is the page: the radio and dropdown states, the rendered SVG of the loss plot
(its tick labels and where the points land), the log box's scroll position, the status line."""

import json
import re
import time

import pytest

from app.training_runs import RunSpec, TrainingRuns
from studio_app import start_app
from training.run_lock import lock_holder
from training.demo.shapes_dataset import write_dataset

STEPS = 100

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    app = start_app(tmp_path_factory.mktemp("finetune-tab"), preset="demo")
    yield app
    app.stop()


def open_tab(browser, studio):
    page = browser.new_page(viewport={"width": 1400, "height": 1200})
    page.set_default_timeout(60_000)
    page.goto(studio.url)
    page.get_by_role("tab", name="Fine-tune").click()
    tab = page.locator("#tab-finetune")
    tab.get_by_label("Run name").wait_for()
    return page, tab


def checked(tab, label: str) -> bool:
    return tab.get_by_label(label, exact=True).is_checked()


def pick(page, tab, dropdown: str, option_text: str) -> None:
    tab.get_by_label(dropdown, exact=True).click()
    page.get_by_role("option").filter(has_text=option_text).first.click()


def test_defaults_are_a_lora_finetune_of_the_selected_preset(browser, studio):
    """#29.1: with preset demo the tab proposes a LoRA fine-tune of the demo weights (not the
    from-scratch recipe under a "-lora" name); from scratch is a labelled choice that brings Method
    Full with it; LoRA rank shows only with Method LoRA (#29, "LoRA rank visible with Method=Full")."""
    page, tab = open_tab(browser, studio)
    try:
        settings = tab.get_by_label("Training settings", exact=True)
        assert settings.input_value() == "demo-lora: LoRA fine-tune of demo"
        assert checked(tab, "LoRA") and checked(tab, "the preset's weights (fine-tune)")
        assert tab.get_by_label("LoRA rank").is_visible()
        tab.get_by_label("Full", exact=True).check()
        tab.get_by_label("LoRA rank").wait_for(state="hidden")

        pick(page, tab, "Training settings", "from scratch")
        page.wait_for_function("() => document.querySelector('#tab-finetune input[type=radio][value=random]')?.checked")
        assert "train demo MMDiT from scratch" in settings.input_value() and checked(tab, "Full")
        tab.get_by_label("LoRA", exact=True).check()  # a LoRA needs trained weights: back to the preset's
        page.wait_for_function("() => document.querySelector('#tab-finetune input[type=radio][value=preset]')?.checked")
        tab.get_by_label("LoRA rank").wait_for(state="visible")

        pick(page, tab, "Preset", "tiny-random")
        page.wait_for_function("() => document.querySelector('#tab-finetune input[aria-label=\"Training settings\"]')"
                               "?.value.startsWith('tiny:')")
        assert settings.input_value() == "tiny: LoRA fine-tune of tiny-random" and checked(tab, "LoRA")
    finally:
        page.close()


def test_existing_runs_after_reload_and_an_empty_pick_keeps_the_name(browser, studio):
    """#29.5: runs already on disk are listed after a (re)load, and opening and closing the list
    without picking leaves the typed run name alone (was: cleared, then Resume failed on '')."""
    for name in ("older-run", "old-run"):
        (studio.runs_dir / name).mkdir(parents=True, exist_ok=True)
        (studio.runs_dir / name / "status.json").write_text(
            json.dumps({"state": "finished", "step": 3, "total_steps": 3, "message": "done"}))
    page, tab = open_tab(browser, studio)
    try:
        page.reload()
        page.get_by_role("tab", name="Fine-tune").click()
        name = tab.get_by_label("Run name")
        name.fill("kept-name")
        existing = tab.get_by_label("Existing runs")
        existing.click()
        options = page.get_by_role("option")
        options.first.wait_for()
        assert {"old-run", "older-run"} <= {o.strip() for o in options.all_inner_texts()}
        page.keyboard.press("Escape")
        tab.get_by_label("Learning rate").click()  # focus elsewhere: the list closes
        time.sleep(1.0)  # any event from the closed list has landed by now
        assert name.input_value() == "kept-name"
        pick(page, tab, "Existing runs", "older-run")
        wait_for_run_name(page, "older-run")
        tab.locator(".finetune-status[data-state=finished]").wait_for()
    finally:
        page.close()


def wait_for_run_name(page, name: str) -> None:
    page.wait_for_function("name => document.querySelector('#tab-finetune .run-name textarea, "
                           "#tab-finetune .run-name input')?.value === name", arg=name)


def tick_values(tab, axis: str) -> list[tuple[float, float]]:
    """(label value, pixel position of its grid line) of an axis' ticks as rendered."""
    labels = tab.locator(f"svg.loss-plot g.{axis} text.tick").all()
    lines = tab.locator(f"svg.loss-plot g.{axis} line").all()
    coordinate = "x1" if axis == "x-axis" else "y1"
    assert len(labels) == len(lines)
    return [(float(t.text_content()), float(line.get_attribute(coordinate))) for t, line in zip(labels, lines)]


def test_a_run_from_before_a_restart_is_stopped_resumed_and_followed_to_the_end(browser, studio, tmp_path):
    """#27.3: a trainer started before the app (re)started is shown as running, Resume on it is
    refused naming its pid, and Stop stops it. #29.3: after Stop -> Resume the status follows the
    run to "finished". #29.4: the loss plot has numeric axes with round, separate tick labels, and
    the points sit where their values are. #29.9: the log box shows its newest line and folds the
    checkpoint lines. A screenshot of the tab is taken mid-run (tmp_path/finetune-mid-run.png)."""
    data = write_dataset(studio.runs_dir / "datasets" / "shapes", num_clips=16, seed=5, num_frames=9)
    previous_app = TrainingRuns(studio.runs_dir)  # "the app before the restart": same command, same folder
    previous_app.start(RunSpec(name="before-restart", preset="tiny-random", data=str(data), lora_rank=8,
                               steps=STEPS, lr=1e-2, config="tiny"))
    run_dir = studio.runs_dir / "before-restart"
    try:
        pid = _wait(lambda: lock_holder(run_dir), "the trainer's lock", 180)
        page, tab = open_tab(browser, studio)
        try:
            wait_for_run_name(page, "before-restart")  # the page load shows what trains
            tab.locator(".finetune-status[data-state=running]").wait_for(timeout=120_000)
            page.wait_for_function("() => document.querySelectorAll('#tab-finetune svg.loss-plot circle').length >= 8",
                                   timeout=120_000)
            page.screenshot(path=str(tmp_path / "finetune-mid-run.png"), full_page=True)
            print(f"mid-run screenshot: {tmp_path / 'finetune-mid-run.png'}")
            check_plot_axes(tab)
            check_log_box(page)

            tab.get_by_role("button", name="Resume").click()
            page.locator(".toast-body").filter(has_text=f"still training (trainer pid {pid})").first.wait_for()
            tab.get_by_role("button", name="Stop").click()
            tab.locator(".finetune-status[data-state=stopped]").wait_for(timeout=120_000)
            stopped_at = json.loads((run_dir / "status.json").read_text())["step"]
            assert 0 < stopped_at < STEPS

            tab.get_by_role("button", name="Resume").click()
            tab.locator(".finetune-status[data-state=finished]").wait_for(timeout=240_000)
            assert f"step {STEPS}/{STEPS}" in tab.locator(".finetune-status").inner_text()
            check_points_sit_at_their_values(page, tab, run_dir)
            check_log_box(page)
            page.screenshot(path=str(tmp_path / "finetune-finished.png"), full_page=True)
        finally:
            page.close()
    finally:
        previous_app.stop_all(wait_s=10)
        TrainingRuns(studio.runs_dir).stop("before-restart")


def check_plot_axes(tab) -> None:
    xs, ys = tick_values(tab, "x-axis"), tick_values(tab, "y-axis")
    assert 3 <= len(xs) <= 8 and 3 <= len(ys) <= 8, (xs, ys)
    assert [v for v, _ in xs] == sorted(v for v, _ in xs) and [p for _, p in xs] == sorted(p for _, p in xs)
    # Higher loss higher up: values rise as the pixel y falls.
    assert [v for v, _ in ys] == sorted(v for v, _ in ys) and [p for _, p in ys] == sorted((p for _, p in ys), reverse=True)
    steps = {round(b - a, 9) for (a, _), (b, _) in zip(ys, ys[1:])}
    assert len(steps) == 1, ys  # evenly spaced round values
    boxes = [t.bounding_box() for t in tab.locator("svg.loss-plot g.y-axis text.tick").all()]
    for upper, lower in zip(boxes, boxes[1:]):  # readable: no two labels overlap
        assert upper["y"] + upper["height"] <= lower["y"] + 0.5 or lower["y"] + lower["height"] <= upper["y"] + 0.5
    assert tab.locator("svg.loss-plot polyline.smoothed-loss").count() == 1


def check_points_sit_at_their_values(page, tab, run_dir) -> None:
    """Read every loss back from the rendered circles through the y-axis ticks: the curve shows the
    logged values (a falling loss is drawn falling)."""
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    page.wait_for_function(f"() => document.querySelectorAll('#tab-finetune svg.loss-plot circle').length === {len(metrics)}")
    (v0, p0), (v1, p1) = tick_values(tab, "y-axis")[:2]
    per_pixel = (v1 - v0) / (p1 - p0)
    drawn = [v0 + (float(c.get_attribute("cy")) - p0) * per_pixel
             for c in tab.locator("svg.loss-plot circle").all()]
    logged = [m["loss"] for m in metrics]
    span = max(logged) - min(logged)
    assert max(abs(d - v) for d, v in zip(drawn, logged)) < 0.01 * span + 1e-6
    line = [float(xy.split(",")[1]) for xy in tab.locator("svg.loss-plot polyline").get_attribute("points").split()]
    first, last = sum(logged[:10]) / 10, sum(logged[-10:]) / 10
    assert (line[-1] > line[0]) == (last < first)  # pixel y grows downwards


def check_log_box(page) -> None:
    box = page.locator("#tab-finetune .finetune-log-box")
    text = box.inner_text()
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines, "empty log"
    for a, b in zip(lines, lines[1:]):
        assert not (re.search("saved checkpoint", a) and re.search("saved checkpoint", b)), text
    visible = page.evaluate("""() => { const box = document.querySelector('#tab-finetune .finetune-log-box');
        const pre = box.querySelector('pre'); const b = box.getBoundingClientRect(), p = pre.getBoundingClientRect();
        return p.bottom <= b.bottom + 2 && p.bottom >= b.top; }""")
    assert visible, "the newest log line is scrolled out of view"


def _wait(probe, what: str, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")
