"""The job queue as a user sees it (#31.1), in a real Chromium: three jobs queued with positions,
the app killed with -9 in the middle of the first, restarted: the interrupted job runs again, the
other two run, and History holds each video exactly once; a 2-row CSV uploaded in the Queue tab
becomes two jobs that run."""

import signal
import time

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from browser_pages import open_app
from studio_app import start_app

pytestmark = pytest.mark.browser


ROWS_JS = """() => Array.from(document.querySelectorAll('#tab-queue .queue-table div[role=row]'))
    .map(row => Array.from(row.querySelectorAll('[role=gridcell]')).map(cell => cell.innerText.trim()))"""


def queue_rows(page) -> list[dict]:
    """The Queue tab's table as the page shows it: one dict per row, by column name."""
    columns = ["position", "state", "progress", "ETA", "job", "settings"]
    return [dict(zip(columns, cells)) for cells in page.evaluate(ROWS_JS) if len(cells) >= len(columns)]


def wait_rows(page, predicate, timeout_s: float = 120):
    deadline = time.monotonic() + timeout_s
    seen = []
    while time.monotonic() < deadline:
        rows = queue_rows(page)
        if predicate(rows):
            return rows
        seen.append(rows)
        page.wait_for_timeout(250)
    raise AssertionError(f"queue never reached the expected state; last views: {seen[-3:]}")


def test_three_jobs_survive_a_kill_9_of_the_app(browser, tmp_path):
    app = start_app(tmp_path)
    try:
        page = open_app(browser, app.url)
        tab = page.locator("#tab-t2v")
        steps = tab.get_by_label("number input for Steps")
        steps.fill("200")
        steps.press("Enter")
        for count, name in enumerate(("first job", "second job", "third job"), start=1):
            tab.locator(".prompt-box textarea").fill(f"a {name}")
            tab.get_by_role("button", name="Generate").click()
            # The next prompt is typed once this job is in the queue (as a user sees it there); typed
            # sooner, a loaded machine may read the box after the next fill.
            deadline = time.monotonic() + 60
            while len(list((app.output_dir / "queue").glob("*.json"))) < count and time.monotonic() < deadline:
                time.sleep(0.1)
        page.get_by_role("tab", name="Queue").click()

        def first_running_others_waiting(rows):
            by_prompt = {r["settings"].split(" · ")[0]: r for r in rows}
            return (len(rows) == 3 and by_prompt.get("a first job", {}).get("state") == "running"
                    and "/200" in by_prompt["a first job"]["progress"]
                    and [by_prompt[p]["position"] for p in ("a second job", "a third job")] == ["1", "2"])

        wait_rows(page, first_running_others_waiting)
        page.screenshot(path=str(tmp_path / "queue-before-kill.png"), full_page=True)
        app.process.send_signal(signal.SIGKILL)
        app.process.wait(timeout=30)
        assert not list(app.output_dir.glob("*.mp4"))  # killed in the middle of the first job
        page.close()

        app = start_app(tmp_path)  # same output folder: the queue is still there
        page = open_app(browser, app.url)
        page.get_by_role("tab", name="Queue").click()
        rows = wait_rows(page, lambda rows: len(rows) == 3 and all(r["state"] == "done" for r in rows), 240)
        assert sorted(r["settings"].split(" · ")[0] for r in rows) == ["a first job", "a second job", "a third job"]
        page.screenshot(path=str(tmp_path / "queue-after-restart.png"), full_page=True)
        page.get_by_role("tab", name="History").click()
        gallery = page.locator("#tab-history .history-gallery")
        gallery.get_by_text("a third job").first.wait_for()
        captions = gallery.inner_text()
        assert [captions.count(f"a {name}") for name in ("first job", "second job", "third job")] == [1, 1, 1]
        assert len(list(app.output_dir.glob("[0-9]*.mp4"))) == 3
        assert len((app.output_dir / "results.csv").read_text().splitlines()) == 4
        page.close()
    finally:
        app.stop()


def test_a_two_row_csv_upload_adds_two_jobs_that_run(browser, tmp_path):
    """Queue tab, "Add jobs from CSV": both rows become jobs with the Text → Video form's settings
    (its Steps set to 3 here) and reach "done" on the page."""
    table = tmp_path / "jobs.csv"
    table.write_text("text,seed\na csv cat,1\na csv dog,2\n")
    app = start_app(tmp_path)
    try:
        page = open_app(browser, app.url)
        steps = page.locator("#tab-t2v").get_by_label("number input for Steps")
        steps.fill("3")
        steps.press("Enter")
        page.get_by_role("tab", name="Queue").click()
        queue_tab = page.locator("#tab-queue")
        csv_box = queue_tab.locator(".queue-csv")
        for _ in range(3):  # a click that lands while the tab still renders can leave the accordion shut
            if csv_box.is_visible():
                break
            queue_tab.get_by_text("Add jobs from CSV").click()
            try:
                csv_box.wait_for(state="visible", timeout=10_000)
            except PlaywrightTimeout:
                pass
        queue_tab.locator(".queue-csv input[type=file]").set_input_files(str(table))
        queue_tab.locator(".queue-csv").get_by_text("jobs.csv").first.wait_for()  # uploaded
        queue_tab.get_by_role("button", name="Add to the queue").click()
        queue_tab.locator(".queue-note").get_by_text("Added 2 jobs from jobs.csv").wait_for()
        rows = wait_rows(page, lambda rows: len(rows) == 2 and all(r["state"] == "done" for r in rows))
        assert sorted(r["settings"].split(" · ")[0] for r in rows) == ["a csv cat", "a csv dog"]
        assert all("3 steps" in r["settings"] for r in rows)
        page.screenshot(path=str(tmp_path / "queue-csv-done.png"), full_page=True)
        assert len(list(app.output_dir.glob("[0-9]*.mp4"))) == 2
        page.close()
    finally:
        app.stop()
