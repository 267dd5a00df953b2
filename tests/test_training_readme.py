"""training/README.md is usage only and its module table matches the tree."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TRAINING = REPO / "training"


def table_modules() -> set[str]:
    text = (TRAINING / "README.md").read_text()
    table = text[text.index("## Modules"):]
    names = set()
    for row in table.splitlines():
        if row.startswith("| `"):
            names.update(re.findall(r"`([^`]+)`", row.split("|")[1]))
    return names


def test_every_module_is_in_the_table_and_every_entry_exists():
    listed = table_modules()
    for name in listed:
        assert (TRAINING / name.rstrip("/")).exists(), name
    code = {str(p.relative_to(TRAINING)) for p in TRAINING.glob("*.py")} | {
        str(p.relative_to(TRAINING)) for p in (TRAINING / "demo").glob("*.py")}
    missing = sorted(n for n in code - listed if not n.endswith("__init__.py"))
    assert not missing, f"training/README.md's module table lacks {missing}"
    for command in (TRAINING / "commands").glob("*.py"):
        assert command.name == "__init__.py" or f"commands/{command.name}" in listed, command.name
    assert "curation/" in listed and "demo/HISTORY.md" in listed


def test_readme_is_usage_and_links_the_history_and_curation():
    text = (TRAINING / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    for link in re.findall(r"\]\(([^)]+)\)", text):
        assert (TRAINING / link).is_file(), link
    assert "(demo/HISTORY.md)" in text and "(curation/README.md)" in text
    history = (TRAINING / "demo" / "HISTORY.md").read_text()
    assert "## The recipe" in history and "runs/train-run24.toml" in history
