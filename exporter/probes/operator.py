"""Operator-supplied probes: ``module:function`` import paths from the configuration."""

from __future__ import annotations

import importlib
from collections.abc import Iterable

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
        except ImportError as exc:
            raise ConfigError(key, f"an importable module, cannot import {module_name!r}") from exc
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
