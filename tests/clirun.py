"""Run the command-line interface in a child process, as a user would (shared by the suites)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

__all__ = ["REPO", "run_cli"]

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m exporter`` with a clean environment plus ``env``."""
    # Only what a shell always has: no service variable of the test run leaks into the case.
    base = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    return subprocess.run(
        [sys.executable, "-m", "exporter", *args],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        check=False,
    )
