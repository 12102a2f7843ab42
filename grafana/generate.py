"""Write every dashboard of ``boards.py`` as JSON into ``grafana/dashboards/``.

Run by ``make dashboards``.

The committed JSON is this module's output; a unit test fails when it drifts.
"""

from __future__ import annotations

import json
from pathlib import Path

from grafana_foundation_sdk.cog.encoder import JSONEncoder

from grafana.boards import DASHBOARDS

__all__ = ["OUT", "main", "render"]

OUT = Path(__file__).resolve().parent / "dashboards"


def render(name: str) -> str:
    """Return the JSON text of dashboard ``name``."""
    return json.dumps(DASHBOARDS[name]().build(), cls=JSONEncoder, indent=2, sort_keys=True) + "\n"


def main(out: Path = OUT) -> None:
    """Write every dashboard into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    for name in DASHBOARDS:
        path = out / f"{name}.json"
        path.write_text(render(name), encoding="utf-8")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
