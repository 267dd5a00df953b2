"""What a curation stage is: a pure function from one input row to its output rows, plus the
columns it adds. The runner (``runner.py``) gives every stage the same resume, progress bar,
worker pool / Ray engine and summary, so a stage module only says what happens to one row."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from training.curation.table import Row


@dataclass
class ItemResult:
    """The outcome of one input row.

    rows: the output rows (none: the input row is dropped).
    reason: why it was dropped; with rows present, what went wrong although the row was kept
        (e.g. "caption failed"). A short category: the summary counts rows per reason.
    detail: the full message for the log (names the file)."""

    rows: list[Row]
    reason: str | None = None
    detail: str = ""
    counts: dict[str, int] = field(default_factory=dict)  # finer tallies, e.g. {"short scenes dropped": 2}

    @classmethod
    def drop(cls, reason: str, detail: str = "") -> ItemResult:
        return cls(rows=[], reason=reason, detail=detail)


@dataclass(frozen=True)
class Stage:
    """name: the subcommand suffix (prepare-NAME); columns: what it adds to its input's columns;
    process(row, config): the per-row function, a top-level function so worker processes and Ray
    tasks can import it; needs: input columns it requires."""

    name: str
    columns: tuple[str, ...]
    process: Callable[[Row, Any], ItemResult]
    needs: tuple[str, ...] = ("path",)
    unit: str = "file"  # what one input row is, for the progress bar


@dataclass
class StageSummary:
    stage: str
    rows_in: int
    rows_out: int = 0
    kept: int = 0  # input rows with output rows and no problem
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> input rows
    flagged: dict[str, int] = field(default_factory=dict)  # kept, but with a problem (reason -> rows)
    counts: dict[str, int] = field(default_factory=dict)  # ItemResult.counts, summed
    resumed: int = 0  # input rows already done by an earlier run
    skipped: str | None = None  # why the whole stage did not run (then rows pass through)
    seconds: float = 0.0
    output: str = ""
    report: dict = field(default_factory=dict)  # stage-specific results (the filter's bucket table)

    def count(self, result_rows: int, reason: str | None, counts: dict[str, int] | None = None) -> None:
        self.rows_out += result_rows
        for name, n in (counts or {}).items():
            self.counts[name] = self.counts.get(name, 0) + n
        if result_rows and reason:
            self.flagged[reason] = self.flagged.get(reason, 0) + 1
        elif result_rows:
            self.kept += 1
        else:
            key = reason or "dropped"
            self.dropped[key] = self.dropped.get(key, 0) + 1

    def line(self) -> str:
        if self.skipped:
            return f"{self.stage}: skipped ({self.skipped}); {self.rows_in} rows passed through"
        parts = [f"{self.stage}: {self.rows_in} rows in, {self.rows_out} rows out"]
        if self.dropped:
            parts.append("dropped " + ", ".join(f"{n} {r}" for r, n in sorted(self.dropped.items())))
        if self.flagged:
            parts.append("kept with problems " + ", ".join(f"{n} {r}" for r, n in sorted(self.flagged.items())))
        if self.counts:
            parts.append(", ".join(f"{n} {name}" for name, n in sorted(self.counts.items())))
        if self.resumed:
            parts.append(f"{self.resumed} done by an earlier run")
        return "; ".join(parts) + f" ({self.seconds:.1f} s)"

    def to_dict(self) -> dict:
        return {
            "stage": self.stage, "rows_in": self.rows_in, "rows_out": self.rows_out, "kept": self.kept,
            "dropped": dict(sorted(self.dropped.items())), "flagged": dict(sorted(self.flagged.items())),
            "counts": dict(sorted(self.counts.items())),
            "resumed": self.resumed, "skipped": self.skipped, "seconds": round(self.seconds, 3),
            "output": self.output, **({"report": self.report} if self.report else {}),
        }
