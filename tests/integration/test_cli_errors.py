"""The command line as a subprocess: broken operator probe modules are exit 2, one line."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO

_MODULES = {
    "syntax": "def broken(:\n    return True\n",
    "raises": "raise RuntimeError('cannot reach Canary-import-58d2 today')\n",
    "missing-dependency": "import nonexistent_dependency_4e7a\n",
    "bad-indent": "def f():\nreturn 1\n",
}


def _write(tmp_path: Path, kind: str) -> Path:
    module = f"opprobe_{kind.replace('-', '_')}"
    (tmp_path / f"{module}.py").write_text(_MODULES[kind], encoding="utf-8")
    config = tmp_path / "probes.yaml"
    config.write_text(f"probes:\n  operator:\n    - {{name: p, target: '{module}:ok'}}\n")
    return config


@pytest.mark.parametrize("kind", sorted(_MODULES))
@pytest.mark.parametrize("command", ["check-config", "probe", "run"])
async def test_broken_operator_probe_module_is_one_line_and_exit_2(
    kind: str, command: str, tmp_path: Path, service_env: dict[str, str]
) -> None:
    """A probe module that fails to import gives exit 2 and one line naming the key, no trace."""
    config = _write(tmp_path, kind)
    extra = ["--web.listen-address", "127.0.0.1:0"] if command == "run" else []
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "exporter", command, "--config.file", str(config), *extra],
        cwd=REPO,
        env={**os.environ, **service_env, "PYTHONPATH": f"{tmp_path}:{REPO}"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("ingest-exporter: invalid configuration: probes.operator[0].target")
    assert "Traceback" not in result.stderr
    assert "Canary-import" not in result.stderr + result.stdout
    assert result.stdout == ""
