"""Operator-supplied probes: ``module:function`` import paths from the configuration."""

from __future__ import annotations

import importlib
import traceback
from collections.abc import Iterable
from pathlib import Path

from exporter.config import OperatorProbeSettings
from exporter.errors import ConfigError
from exporter.probes.base import FunctionProbe

__all__ = ["load_operator_probes"]


def load_operator_probes(entries: Iterable[OperatorProbeSettings]) -> list[FunctionProbe]:
    """Import each configured probe function; a bad path is a configuration error."""
    probes = []
    for index, entry in enumerate(entries):
        module_name, _, attribute = entry.target.partition(":")
        key = f"probes.operator[{index}].target"
        try:
            module = importlib.import_module(module_name)
        # Any error at import is the operator's module failing, reported like a bad path.
        except Exception as exc:  # noqa: BLE001
            raise ConfigError(key, _import_failure(module_name, exc)) from None
        function = getattr(module, attribute, None)
        if not callable(function):
            raise ConfigError(key, f"a callable, {entry.target!r} is not one")
        probes.append(
            FunctionProbe(
                connector=entry.connector,
                name=entry.name,
                function=function,
                timeout=entry.timeout_seconds,
            )
        )
    return probes


def _import_failure(module_name: str, exc: Exception) -> str:
    """Say why a module did not import in one line, without the exception's own text.

    That text is the operator's code talking and may quote anything (a DSN it failed to
    reach), so only the error's type and where it happened are shown; ``python -c "import
    MODULE"`` shows the rest.
    """
    if isinstance(exc, ModuleNotFoundError) and exc.name == module_name.partition(".")[0]:
        return f"an importable module, cannot import {module_name!r}"
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        where = f"(no module named {exc.name!r})"
    elif isinstance(exc, SyntaxError):
        where = f"at {Path(exc.filename or '?').name} line {exc.lineno}"
    else:
        frames = traceback.extract_tb(exc.__traceback__)
        where = f"at {Path(frames[-1].filename).name} line {frames[-1].lineno}" if frames else ""
    return f"an importable module, importing {module_name!r} raised {type(exc).__name__} {where}"
