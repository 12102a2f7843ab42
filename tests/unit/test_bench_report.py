from __future__ import annotations

import math
from pathlib import Path

import pytest

from bench.report import (
    Document,
    Verdict,
    fmt_count,
    fmt_mib,
    fmt_ms,
    fmt_ratio,
    fmt_seconds,
    render_table,
)


def test_table_aligns_numbers_right_and_text_left() -> None:
    """Numeric columns get a right-aligned rule, text columns a plain one."""
    table = render_table(["name", "series"], [("ours", 1718), ("theirs", 615)])
    assert table.splitlines() == [
        "| name | series |",
        "| --- | ---: |",
        "| ours | 1,718 |",
        "| theirs | 615 |",
    ]


def test_table_cells_for_gaps_floats_and_pipes() -> None:
    """None and NaN become a dash, floats keep three figures, and a pipe cannot end a cell."""
    table = render_table(["a", "b", "c"], [(None, math.nan, "x|y"), (0.12345, True, "z")])
    rows = table.splitlines()[2:]
    assert rows[0] == "| - | - | x\\|y |"
    assert rows[1] == "| 0.123 | yes | z |"


def test_table_refuses_ragged_rows() -> None:
    """A row with a missing cell is a bug in the bench, not a table to print."""
    with pytest.raises(ValueError, match="one cell per header"):
        render_table(["a", "b"], [("only one",)])


def test_formats() -> None:
    """Durations, sizes, counts and ratios read as the README quotes them."""
    assert fmt_ms(0.00056) == "0.56 ms"
    assert fmt_ms(0.0422) == "42.2 ms"
    assert fmt_ms(4.082) == "4,082 ms"
    assert fmt_ms(None) == "-"
    assert fmt_seconds(1.1) == "1.10 s"
    assert fmt_seconds(147.04) == "147.0 s"
    assert fmt_mib(72 * 2**20) == "72 MiB"
    assert fmt_count(82013.0) == "82,013"
    assert fmt_count(math.nan) == "-"
    assert fmt_ratio(1.7) == "1.70x"


def test_document_renders_sections_and_verdicts(tmp_path: Path) -> None:
    """The document has its title, sections in order and a targets table with each word."""
    doc = Document("`make bench`, 2026-12-04", preamble=["Machine: 2 cores."])
    doc.section("Versions", render_table(["program", "version"], [("Python", "3.11.7")]))
    doc.verdicts = [
        Verdict("RSS <= 60 MiB", "58 MiB", True),
        Verdict("ready within two intervals", "147 s", False),
        Verdict("3,000 deployments", "not run: budget", None),
    ]
    path = doc.write(tmp_path / "results" / "2026-12-04.md")
    text = path.read_text()
    assert text.startswith("# `make bench`, 2026-12-04\n\nMachine: 2 cores.\n")
    assert text.index("## Versions") < text.index("## Targets")
    assert "| RSS <= 60 MiB | 58 MiB | met |" in text
    assert "| ready within two intervals | 147 s | missed |" in text
    assert "| 3,000 deployments | not run: budget | not measured |" in text
