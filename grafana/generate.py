"""Write every dashboard of ``boards.py`` as JSON into ``grafana/dashboards/``.

Run by ``make dashboards``.

The committed JSON is this module's output; a unit test fails when it drifts.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.cog.encoder import JSONEncoder

from grafana.boards import DASHBOARDS

__all__ = ["OUT", "README", "README_MARKERS", "main", "panel_table", "render", "update_readme"]

OUT = Path(__file__).resolve().parent / "dashboards"
README = OUT.parents[1] / "README.md"
README_MARKERS = ("<!-- dashboards-table:start -->", "<!-- dashboards-table:end -->")


def render(name: str) -> str:
    """Return the JSON text of dashboard ``name``."""
    return json.dumps(DASHBOARDS[name]().build(), cls=JSONEncoder, indent=2, sort_keys=True) + "\n"


def panel_table() -> str:
    """Return the README's table: every dashboard's panels, the question each answers, and how.

    A panel's description opens with its question (a test holds every panel to that).
    """
    lines = [
        "| dashboard | panel | question it answers | what it shows |",
        "| --- | --- | --- | --- |",
    ]
    for name in DASHBOARDS:
        board: dict[str, Any] = json.loads(render(name))
        for panel in board["panels"]:
            if panel["type"] != "row":
                question, _, shows = panel["description"].partition("? ")
                lines.append(f"| {board['title']} | {panel['title']} | {question}? | {shows} |")
    return "\n".join(lines)


def update_readme(path: Path = README) -> bool:
    """Rewrite the table between the README markers; return whether anything changed."""
    text = path.read_text(encoding="utf-8")
    start, end = README_MARKERS
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    updated = pattern.sub(lambda _: f"{start}\n{panel_table()}\n{end}", text)
    if updated != text:
        path.write_text(updated, encoding="utf-8")
    return updated != text


def main(out: Path = OUT) -> None:
    """Write every dashboard into ``out`` and the panel table into the README."""
    out.mkdir(parents=True, exist_ok=True)
    for name in DASHBOARDS:
        path = out / f"{name}.json"
        path.write_text(render(name), encoding="utf-8")
        print(f"wrote {path}")
    if update_readme():
        print(f"updated the dashboards table of {README}")


if __name__ == "__main__":
    main()
