"""A stage's output CSV that grows row by row and survives a kill at any moment.

Beside ``OUT.csv`` lives ``OUT.csv.progress.jsonl``: a header line (stage, settings, columns) and
one line per finished input row (its key, how many output rows it gave, why it was dropped). The
runner finishes input rows in input order, so the done rows are always a prefix of the input.
For each input row the output rows are appended to the CSV and flushed first, then its journal
line. A restart therefore trusts the journal: it checks the done prefix still matches the input,
cuts the CSV back to the rows the journal accounts for (a kill between the two writes leaves
rows of an unfinished input row behind) and appends from there, so every row lands exactly once.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from opensora.errors import UserError
from training.curation.stage import ItemResult
from training.curation.table import Row

JOURNAL_VERSION = 1


def journal_path(output: str | Path) -> Path:
    output = Path(output)
    return output.with_name(output.name + ".progress.jsonl")


@dataclass(frozen=True)
class JournalEntry:
    key: str
    rows: int
    reason: str | None
    detail: str
    counts: dict[str, int]


class ResumableOutput:
    """Open with the header this run would write; ``done`` input rows are already in the file."""

    def __init__(self, output: str | Path, columns: Sequence[str], header: dict, keys: Sequence[str], overwrite: bool):
        self.output = Path(output)
        self.journal = journal_path(self.output)
        self.columns = list(columns)
        self.header = {"journal": JOURNAL_VERSION, **header, "columns": self.columns}
        if overwrite or not self.output.exists():  # a progress file without its CSV has nothing to resume
            for path in (self.output, self.journal):
                path.unlink(missing_ok=True)
        if self.output.exists() and not self.journal.exists():
            raise UserError(
                f"{self.output} exists but has no progress file {self.journal.name}, so it was not written "
                "by this stage (or finished before the progress file was removed); choose another output "
                "or pass --overwrite"
            )
        self.entries: list[JournalEntry] = self._recover(keys) if self.journal.exists() else self._start()
        self._csv = open(self.output, "a", newline="", encoding="utf-8")
        self._log = open(self.journal, "a", encoding="utf-8")

    @property
    def done(self) -> int:
        return len(self.entries)

    def append(self, key: str, result: ItemResult) -> None:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self.columns, extrasaction="raise")
        writer.writerows({c: row.get(c, "") for c in self.columns} for row in result.rows)
        self._csv.write(buffer.getvalue())
        self._csv.flush()  # rows first: a kill before the journal line only leaves rows to cut back
        entry = JournalEntry(key=key, rows=len(result.rows), reason=result.reason, detail=result.detail,
                             counts=result.counts)
        self._log.write(json.dumps(entry.__dict__) + "\n")
        self._log.flush()
        self.entries.append(entry)

    def close(self) -> None:
        self._csv.close()
        self._log.close()

    def __enter__(self) -> ResumableOutput:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ start and recovery

    def _start(self) -> list[JournalEntry]:
        self.output.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(self.output, _csv_text([self.columns]))
        _atomic_write(self.journal, json.dumps(self.header) + "\n")
        return []

    def _recover(self, keys: Sequence[str]) -> list[JournalEntry]:
        lines = self.journal.read_text(encoding="utf-8").split("\n")
        complete, partial = lines[:-1], lines[-1]  # text after the last newline is a torn write
        try:
            header = json.loads(complete[0]) if complete else None
        except ValueError:
            header = None
        if not isinstance(header, dict):
            raise UserError(f"progress file {self.journal} has no readable header; pass --overwrite to start again")
        self._check_header(header)
        entries = []
        for number, line in enumerate(complete[1:], start=2):
            try:
                entries.append(JournalEntry(**json.loads(line)))
            except (ValueError, TypeError):
                raise UserError(f"{self.journal} line {number} is damaged; pass --overwrite to start again") from None
        if len(entries) > len(keys):
            raise UserError(
                f"{self.journal} records {len(entries)} finished rows but the input has {len(keys)}; "
                "the input changed: pass --overwrite to start again"
            )
        for i, entry in enumerate(entries):
            if entry.key != keys[i]:
                raise UserError(
                    f"input row {i + 1} is {keys[i]}, but the partial run in {self.output} did {entry.key} "
                    "there; the input changed: pass --overwrite to start again"
                )
        if partial:
            _atomic_write(self.journal, "\n".join(complete) + "\n")
        self._cut_csv(sum(e.rows for e in entries))
        return entries

    def _check_header(self, found: dict) -> None:
        for field in ("stage", "columns", "settings"):
            if found.get(field) != self.header.get(field):
                raise UserError(
                    f"{self.output} was started with other {field}: {_difference(found.get(field), self.header.get(field))}; "
                    "run with the same ones to resume, or pass --overwrite to start again"
                )

    def _cut_csv(self, expected_rows: int) -> None:
        rows: list[list[str]] = []
        extra = False
        with open(self.output, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            try:
                header = next(reader, None)
                for row in reader:
                    if len(rows) == expected_rows:
                        extra = True
                        break
                    rows.append(row)
            except csv.Error:
                extra = True  # a torn last row; only reachable past the accounted rows
        if header != self.columns:
            raise UserError(f"{self.output} has columns {header}, expected {self.columns}; pass --overwrite")
        if len(rows) < expected_rows:
            raise UserError(
                f"{self.output} holds {len(rows)} rows but its progress file accounts for {expected_rows}; "
                "it was edited: pass --overwrite to start again"
            )
        if extra:
            _atomic_write(self.output, _csv_text([header, *rows]))


def _difference(found: object, expected: object) -> str:
    if isinstance(found, dict) and isinstance(expected, dict):
        changed = sorted(k for k in found.keys() | expected.keys() if found.get(k) != expected.get(k))
        return ", ".join(f"{k} {found.get(k)!r} -> {expected.get(k)!r}" for k in changed)
    return f"{found!r} -> {expected!r}"


def _csv_text(rows: Sequence[Sequence[str]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    return buffer.getvalue()


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def passthrough(output: str | Path, columns: Sequence[str], rows: Sequence[Row], header: dict) -> None:
    """A skipped stage: its output is its input, with a finished journal so a rerun sees it done."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="raise")
    writer.writeheader()
    writer.writerows({c: row.get(c, "") for c in columns} for row in rows)
    journal = journal_path(output)
    journal.unlink(missing_ok=True)
    _atomic_write(output, buffer.getvalue())
    _atomic_write(journal, json.dumps({"journal": JOURNAL_VERSION, **header, "columns": list(columns)}) + "\n")
