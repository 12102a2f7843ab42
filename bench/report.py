"""Render the bench's results as a dated markdown document (tables, targets, notes)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "Document",
    "Verdict",
    "fmt_count",
    "fmt_mib",
    "fmt_ms",
    "fmt_ratio",
    "fmt_seconds",
    "render_table",
]

Cell = str | int | float | None


def _cell(value: Cell) -> str:
    """Return a table cell: text as is, numbers with thousands separators, gaps as a dash."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return fmt_count(value)
    if isinstance(value, float):
        return f"{value:,.3g}"
    # A pipe inside a cell would end it early in every markdown renderer.
    return value.replace("|", "\\|")


def render_table(headers: Sequence[str], rows: Sequence[Sequence[Cell]]) -> str:
    """Return a GitHub markdown table; numeric-looking columns are right-aligned."""
    if any(len(row) != len(headers) for row in rows):
        raise ValueError("every row needs one cell per header")
    cells = [[_cell(v) for v in row] for row in rows]
    numeric = [
        bool(rows) and all(isinstance(row[i], int | float) or row[i] is None for row in rows)
        for i in range(len(headers))
    ]
    rule = ["---:" if right else "---" for right in numeric]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(rule) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines) + "\n"


def fmt_count(value: float | None) -> str:
    """Return a whole number with thousands separators."""
    return "-" if value is None or math.isnan(value) else f"{round(value):,}"


def fmt_ms(seconds: float | None) -> str:
    """Return a duration in milliseconds with precision that fits its size."""
    if seconds is None or math.isnan(seconds):
        return "-"
    ms = seconds * 1000
    if ms >= 100:
        return f"{ms:,.0f} ms"
    if ms >= 10:
        return f"{ms:.1f} ms"
    return f"{ms:.2f} ms"


def fmt_seconds(seconds: float | None) -> str:
    """Return a duration in seconds (two significant decimals below ten)."""
    if seconds is None or math.isnan(seconds):
        return "-"
    return f"{seconds:.2f} s" if seconds < 10 else f"{seconds:,.1f} s"


def fmt_mib(size: float | None) -> str:
    """Return a byte count in MiB."""
    return "-" if size is None or math.isnan(size) else f"{size / 2**20:,.0f} MiB"


def fmt_ratio(value: float | None) -> str:
    """Return a ratio as ``1.23x``."""
    return "-" if value is None or math.isnan(value) else f"{value:.2f}x"


@dataclass(frozen=True)
class Verdict:
    """One performance target: what it asks, what was measured, and whether it was met."""

    target: str
    measured: str
    met: bool | None  # None: not measured in this run (the reason is in ``measured``)

    @property
    def word(self) -> str:
        """Return ``met``, ``missed`` or ``not measured``."""
        return {True: "met", False: "missed", None: "not measured"}[self.met]


@dataclass
class Document:
    """The markdown result of one run: a title, sections in order, and the verdicts."""

    title: str
    preamble: list[str] = field(default_factory=list)
    sections: list[tuple[str, str]] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)

    def section(self, heading: str, body: str) -> None:
        """Append a section (its body is markdown)."""
        self.sections.append((heading, body.rstrip() + "\n"))

    def render(self) -> str:
        """Return the whole document."""
        parts = [f"# {self.title}\n\n", *(line + "\n" for line in self.preamble)]
        for heading, body in self.sections:
            parts += [f"\n## {heading}\n\n", body]
        if self.verdicts:
            rows = [(v.target, v.measured, v.word) for v in self.verdicts]
            parts += ["\n## Targets\n\n", render_table(["target", "measured", ""], rows)]
        return "".join(parts)

    def write(self, path: Path) -> Path:
        """Write the document to ``path`` (creating its folder) and return the path."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.render())
        return path
