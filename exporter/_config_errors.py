"""Explain a rejected configuration value in one line: where it was set, and what it should be.

A value reaches the settings tree from a file key, an environment variable or a flag; pydantic
only knows its path in the tree. :class:`Origins` maps the path back to what the operator
wrote, looked up only when an error needs it. A value is quoted back only when it cannot be a
credential.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from exporter.errors import ConfigError
from exporter.redaction import redact_text

__all__ = ["Origins", "config_error", "echoable"]


class Origins:
    """Name where a value came from; looked up only when an error has to say so."""

    def __init__(self, label: str, file_data: Mapping[str, Any]) -> None:
        self.label = label
        self.file = file_data
        #: Settings path ("@" prefix: deployment level) -> the variable or flag that set it.
        self.variables: dict[str, str] = {}

    def __call__(self, loc: list[str]) -> str:
        """Return the variable, flag or ``file: key`` that set the value at ``loc``."""
        in_deployment = loc[:1] == ["deployments"] and len(loc) > 1
        rest = loc[2:] if in_deployment else loc
        found: list[tuple[int, str | None]] = []
        if in_deployment and "deployments" in self.file:
            # An entry's own keys win over the defaults it inherits (equal depth: first wins).
            depth, where = self._in_file(loc)
            found.append((depth - 2, where))
        prefix = "@" if in_deployment else ""
        for depth in range(len(rest), 0, -1):
            name = self.variables.get(prefix + ".".join(rest[:depth]))
            if name is not None:
                found.append((depth, name))
                break
        top = ["deployment", *rest[1:]] if in_deployment and rest[:1] == ["name"] else rest
        found.append(self._in_file(top))
        _, where = max(found, key=lambda item: item[0])
        return where or ".".join(loc) or self.label or "configuration"

    def _in_file(self, parts: list[str]) -> tuple[int, str | None]:
        node: Any = self.file
        shown = ""
        depth = 0
        for part in parts:
            if isinstance(node, Mapping) and part in node:
                node, shown = node[part], f"{shown}.{part}"
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node, shown = node[int(part)], f"{shown}[{part}]"
            else:
                break
            depth += 1
        return depth, f"{self.label}: {shown.lstrip('.')}" if depth else None


def config_error(exc: ValidationError, origins: Origins) -> ConfigError:
    """Turn pydantic's first error into one line naming where the bad value came from."""
    error = exc.errors(include_url=False)[0]
    loc = [str(part) for part in error["loc"]]
    message = error["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if not loc:
        # Cross-reference checks run on the whole tree and name their path in the message.
        path, _, message = message.partition(": ")
        loc = path.split(".")
    if error["type"] == "extra_forbidden":
        if not echoable(loc[-1]):
            # A URL pasted as a key: name the mapping that holds it, never the key itself.
            return ConfigError(
                origins(loc[:-1]), "unknown key (not shown: it may hold a credential)"
            )
        return ConfigError(origins(loc), f"unknown key {loc[-1]!r}")
    if error["type"] == "missing":
        return ConfigError(origins(loc), "expected a value (required)")
    expected = _EXPECTED.get(error["type"]) or _explain(message)
    got = error.get("input")
    # Echo the offending value only where it cannot be a credential. Never for a pattern
    # mismatch: those fields get their values split out of lists and pairs, so the value
    # may be the second half of a ``user:secret`` put there by mistake ("monitor:hunter 2").
    if (
        isinstance(got, str | int | float)
        and not _SECRET_LEAF.search(loc[-1])
        and error["loc"]
        and error["type"] != "string_pattern_mismatch"
    ):
        shown = str(got)
        expected += f", got {shown!r}" if echoable(shown) else ""
    return ConfigError(origins(loc), expected)


def echoable(text: str) -> bool:
    """Tell whether operator input may be quoted in an error message.

    Only a short plain word may: letters, digits, ``_ . + -`` and spaces. A value put where
    a mapping, a list item, a key or a ``host:port`` was expected is often a whole
    connection URL or a ``user:secret`` pair, so anything with ``@``, ``:``, ``/``, ``=``,
    ``%`` or quotes is named, never quoted; so is anything the redactor would mask.
    """
    return _PLAIN.fullmatch(text) is not None and redact_text(text) == text


_PLAIN = re.compile(r"[\w .+-]{1,40}")
_SECRET_LEAF = re.compile(r"url|pass|secret|token|key|user|sasl", re.IGNORECASE)
_EXPECTED = {
    "bool_parsing": "expected a boolean (true/false, yes/no, 1/0)",
    "bool_type": "expected a boolean (true/false, yes/no, 1/0)",
    "float_parsing": "expected a number",
    "int_parsing": "expected a whole number",
    "int_parsing_size": "expected a whole number (this one is far too long)",
}


def _explain(message: str) -> str:
    text = message.removeprefix("Input should be ").removeprefix("input should be ")
    if text != message:
        text = text.replace(", unable to interpret input", "")
        if text.startswith(("greater", "less")):
            text = "a number " + text
        return "expected " + text
    return text if text.startswith("expected") else f"expected valid input ({text})"
