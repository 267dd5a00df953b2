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


def test_readme_layout_names_every_top_level_folder_and_only_paths_that_exist():
    """#33: the README's Layout section matches the tree: each bullet's paths exist (under the
    folder the bullet starts with, else at the top), and every tracked top-level folder is named."""
    import re
    import subprocess

    text = (REPO / "README.md").read_text()
    layout = text[text.index("## Layout"):]
    bullets = re.split(r"\n- ", layout)[1:]
    named = set()
    for bullet in bullets:
        paths = [p for p in re.findall(r"`([\w./-]+)`", bullet) if p.endswith(("/", ".py"))]
        base = REPO / paths[0] if paths and paths[0].endswith("/") else REPO
        for path in paths:
            named.add(path.split("/")[0])
            assert (REPO / path).exists() or (base / path).exists(), f"README Layout names {path!r}: not in the tree"
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True).stdout.split()
    folders = {p.split("/")[0] for p in tracked if "/" in p and not p.startswith(".")}
    assert folders <= named, f"top-level folders missing from the README's Layout: {sorted(folders - named)}"
