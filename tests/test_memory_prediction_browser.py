"""The memory planner's line beside Generate, in a real Chromium: it shows the profile auto picks
and the predicted RAM, and changes when Frames, Samples or the memory profile change."""

import re

import pytest

from browser_pages import open_app, set_number
from studio_app import start_app

pytestmark = pytest.mark.browser

LINE = "#tab-t2v .memory-prediction [data-testid=markdown]"


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    app = start_app(tmp_path_factory.mktemp("memory-app"))  # tiny-random on this CPU
    yield app
    app.stop()


@pytest.fixture(scope="module")
def page(browser, studio):
    page = open_app(browser, studio.url, height=1100)
    yield page
    page.close()


def line_text(page) -> str:
    return page.locator(LINE).inner_text()


def wait_for_change(page, before: str) -> str:
    page.wait_for_function(f"b => document.querySelector(`{LINE}`).innerText.trim() !== b", arg=before.strip())
    return line_text(page)


def predicted_gib(text: str) -> float:
    number, unit = re.search(r"predicted ([\d.]+) (MiB|GiB) RAM", text).groups()
    return float(number) / (1024 if unit == "MiB" else 1)


def test_prediction_follows_frames_samples_and_profile(page):
    page.wait_for_function(f"() => document.querySelector(`{LINE}`)?.innerText.includes('predicted')")
    before = line_text(page)
    assert re.search(r"Memory \(auto → none\): predicted \d+ MiB RAM of [\d.]+ GiB available", before), before

    tab = page.locator("#tab-t2v")
    set_number(tab, "Frames", 129)
    more_frames = wait_for_change(page, before)
    print(f"9 frames: {before!r}; 129 frames: {more_frames!r}")
    assert predicted_gib(more_frames) > predicted_gib(before)

    set_number(tab, "Samples", 3)
    more_samples = wait_for_change(page, more_frames)
    assert predicted_gib(more_samples) > predicted_gib(more_frames)  # the decoded videos wait to be written

    page.locator(".memory-controls").get_by_text("Memory", exact=True).first.click()  # open the accordion
    page.get_by_label("Memory profile").click()
    page.get_by_role("option", name=re.compile(r"^disk: ")).click()
    disk = wait_for_change(page, more_samples)
    assert disk.startswith("Memory (disk): predicted")
    assert predicted_gib(disk) < predicted_gib(more_samples)  # the MMDiT's blocks stay on disk
