import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures" / "opensora_v2"


@pytest.fixture(scope="session")
def tiny_pipeline():
    from opensora.pipeline import OpenSoraPipeline

    return OpenSoraPipeline.from_preset("tiny-random")


def run_cli(*args: str, module: str = "opensora", timeout: float = 300, env=None) -> subprocess.CompletedProcess:
    """Run `python -m <module> ...` in a subprocess from the repo root."""
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env
    )


@pytest.fixture(scope="module")
def browser():
    """Chromium for a browser-test module (tests/browser_pages.py); skipped without `chromium`."""
    from browser_pages import chromium

    with chromium() as instance:
        yield instance
