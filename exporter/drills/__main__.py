"""Write the drill record's JSON schema: ``python -m exporter.drills [PATH]`` (``make docs``)."""

from __future__ import annotations

import sys
from pathlib import Path

from exporter.drills.report import SCHEMA_PATH, json_schema

if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else SCHEMA_PATH)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json_schema(), encoding="utf-8")
    print(f"wrote {target}")
