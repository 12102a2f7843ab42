"""Parts of the Kafka settings: the read-only lag of named groups, and the SASL and TLS rules.

Imported through :mod:`exporter.config`; kept apart so the settings module stays readable.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Self

from pydantic import Field, model_validator

from exporter._frozen import PlainName, PositiveSeconds, _Frozen

__all__ = ["KafkaLagSettings", "LagGroup", "check_sasl", "check_tls_files"]


class LagGroup(_Frozen):
    """A consumer group whose lag is read (never joined), by exact name or by pattern.

    In a list, a plain string is a group name and ``/regex/`` a pattern matched against the
    whole group id; thresholds not given here come from :class:`KafkaLagSettings`. Either is
    published as written (the check ``group_lag:<entry>``), so neither may hold whitespace or
    an ``@``: no URL and no ``user:secret@host`` put there by mistake reaches a label.
    """

    name: PlainName | None = Field(None, max_length=249)
    match: str | None = Field(None, min_length=1, pattern=r"^[^\s@]+$")
    warn_seconds: PositiveSeconds | None = None
    down_seconds: PositiveSeconds | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, data: Any) -> Any:
        if isinstance(data, str):
            text = data.strip()
            if len(text) > 2 and text.startswith("/") and text.endswith("/"):
                return {"match": text[1:-1]}
            return {"name": text}
        return data

    @model_validator(mode="after")
    def _one_of(self) -> Self:
        if (self.name is None) == (self.match is None):
            raise ValueError("expected exactly one of name (a group id) or match (a regex)")
        if self.match is not None:
            try:
                re.compile(self.match)
            except re.error as exc:
                raise ValueError(f"expected a regular expression ({exc.msg})") from None
        return self

    @property
    def label(self) -> str:
        """Return how the entry was written: the name, or ``/regex/``."""
        return self.name if self.name is not None else f"/{self.match}/"

    def selects(self, group: str) -> bool:
        """Tell whether ``group`` is this entry's group, or matches its pattern."""
        if self.name is not None:
            return group == self.name
        return re.fullmatch(str(self.match), group) is not None


class KafkaLagSettings(_Frozen):
    """Read-only lag of the named consumer groups, and the thresholds that judge it."""

    groups: tuple[LagGroup, ...] = ()
    warn_seconds: PositiveSeconds | None = 300.0
    down_seconds: PositiveSeconds | None = 1_800.0

    @model_validator(mode="after")
    def _unique(self) -> Self:
        labels = [group.label for group in self.groups]
        if len(set(labels)) != len(labels):
            raise ValueError("expected each group or pattern once")
        for group in (None, *self.groups):
            warn, down = self.thresholds(group)
            if warn is not None and down is not None and down < warn:
                raise ValueError("expected down_seconds no smaller than warn_seconds")
        return self

    def thresholds(self, group: LagGroup | None = None) -> tuple[float | None, float | None]:
        """Return ``(warn, down)`` seconds for ``group`` (the defaults for ``None``)."""
        if group is None:
            return self.warn_seconds, self.down_seconds
        warn = self.warn_seconds if group.warn_seconds is None else group.warn_seconds
        down = self.down_seconds if group.down_seconds is None else group.down_seconds
        return warn, down


def check_sasl(protocol: str, mechanism: str | None, username: str | None, password: Any) -> None:
    """Refuse SASL settings that do not belong together.

    A ``SASL_*`` protocol needs a mechanism, a user and a password; any of those needs a
    ``SASL_*`` protocol (without one the client connects without SASL and ignores them).

    Raises:
        ValueError: naming the settings (and their variables) that are missing or stray.
    """
    fields = {
        "sasl_mechanism (KAFKA_SASL_MECHANISM)": mechanism,
        "sasl_username (KAFKA_SASL_USERNAME)": username,
        "sasl_password (KAFKA_SASL_PASSWORD)": password,
    }
    given = [name for name, value in fields.items() if value is not None]
    missing = [name for name in fields if name not in given]
    if protocol.startswith("SASL_") and missing:
        raise ValueError(f"expected {' and '.join(missing)} with security_protocol {protocol}")
    if not protocol.startswith("SASL_") and given:
        raise ValueError(
            f"expected security_protocol SASL_PLAINTEXT or SASL_SSL "
            f"(KAFKA_SECURITY_PROTOCOL) with {' and '.join(given)}"
        )


def check_tls_files(
    protocol: str, cafile: Path | None, certfile: Path | None, keyfile: Path | None
) -> None:
    """Refuse TLS files without TLS, and a client key without its certificate.

    Raises:
        ValueError: naming the settings that do not belong together.
    """
    if any((cafile, certfile, keyfile)) and protocol not in ("SSL", "SASL_SSL"):
        raise ValueError("ssl_* files: expected security_protocol SSL or SASL_SSL")
    if keyfile is not None and certfile is None:
        raise ValueError("ssl_keyfile: expected ssl_certfile too (the key's certificate)")
