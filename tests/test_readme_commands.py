"""The README's generate commands run as written on a fresh clone (demo model, shipped examples/)."""

import csv
import shlex

import pytest

from conftest import REPO
from opensora.cli import main


def readme_generate_commands() -> list[list[str]]:
    commands = []
    for line in (REPO / "README.md").read_text().splitlines():
        line = line.strip().split("  #")[0]
        if line.startswith("python -m opensora generate") and "examples/" in line:
            commands.append(shlex.split(line)[4:])
    return commands


@pytest.mark.parametrize("argv", readme_generate_commands(), ids=lambda a: a[0])
def test_readme_example_command_writes_its_videos(argv, tmp_path, monkeypatch):
    """#29: the README's examples use files the repo ships and the default model can make them."""
    monkeypatch.chdir(REPO)
    code = main(["generate", *argv, "--num-steps", "2", "--output-dir", str(tmp_path)])
    assert code == 0
    rows = list(csv.DictReader(open(tmp_path / "results.csv")))
    expected = 3 if "--csv" in argv else 1
    assert len(rows) == expected and all((tmp_path / r["path"]).is_file() for r in rows)


def test_readme_has_both_example_commands():
    kinds = {"--csv" in a for a in readme_generate_commands()}
    assert kinds == {True, False}
