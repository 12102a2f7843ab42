"""The ``--web.config.file``: TLS and basic auth in the Prometheus exporter-toolkit format.

The file is the one every official exporter reads (``tls_server_config``,
``http_server_config``, ``basic_auth_users``), so an operator's existing file works here.
Differences from exporter-toolkit, each for a stated reason:

- it is read once at start (the toolkit re-reads it per request): the settings tree is
  frozen for the life of the process, and a bad edit should fail a restart, not a scrape;
- ``RequestClientCert``/``RequireAnyClientCert`` are refused: Python's ``ssl`` cannot ask
  for a client certificate without verifying it;
- ``TLS10``/``TLS11`` are refused: both are deprecated (RFC 8996);
- the inline ``cert``/``key``/``client_ca`` forms and cipher/curve tuning are refused rather
  than ignored, so no file silently means less than it says.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import re
import secrets
import ssl
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, Self

import bcrypt
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from exporter._config_file import read_yaml
from exporter.errors import ConfigError

__all__ = [
    "AUTH_REALM",
    "BasicAuth",
    "HTTPServerConfig",
    "TLSServerConfig",
    "WebConfig",
    "load_web_config",
]

#: The ``WWW-Authenticate`` realm of 401 answers.
AUTH_REALM = "ingest-exporter"

_TLS_VERSIONS = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
_CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
# exporter-toolkit keys this implementation knows but does not honour (see the module doc).
_REFUSED = {
    "cert": "inline certificates are not supported; use cert_file",
    "key": "inline keys are not supported; use key_file",
    "client_ca": "inline CAs are not supported; use client_ca_file",
    "cipher_suites": "cipher tuning is not supported (OpenSSL defaults apply)",
    "curve_preferences": "curve tuning is not supported (OpenSSL defaults apply)",
    "prefer_server_cipher_suites": "cipher tuning is not supported (OpenSSL defaults apply)",
    "client_allowed_sans": "SAN allow-lists are not supported",
}
_REFUSED_VALUES = {
    "RequestClientCert": "not supported: Python's ssl cannot request a client certificate "
    "without verifying it (use VerifyClientCertIfGiven)",
    "RequireAnyClientCert": "not supported: Python's ssl cannot require a client certificate "
    "without verifying it (use RequireAndVerifyClientCert)",
    "TLS10": "not supported: TLS 1.0 is deprecated (RFC 8996); use TLS12 or TLS13",
    "TLS11": "not supported: TLS 1.1 is deprecated (RFC 8996); use TLS12 or TLS13",
}
_REFUSED_VALUES["RequireClientCert"] = _REFUSED_VALUES["RequireAnyClientCert"]
# The response headers exporter-toolkit lets an operator set.
_HEADERS = frozenset(
    {
        "Content-Security-Policy",
        "X-Frame-Options",
        "X-Content-Type-Options",
        "X-XSS-Protection",
        "Strict-Transport-Security",
    }
)
_BCRYPT = re.compile(r"^\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}$")


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)


class TLSServerConfig(_Strict):
    """The ``tls_server_config`` section (paths already resolved against the file's folder)."""

    cert_file: Path | None = None
    key_file: Path | None = None
    client_ca_file: Path | None = None
    client_auth_type: Literal[
        "NoClientCert", "VerifyClientCertIfGiven", "RequireAndVerifyClientCert"
    ] = "NoClientCert"
    min_version: Literal["TLS12", "TLS13"] = "TLS12"
    max_version: Literal["TLS12", "TLS13"] = "TLS13"

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if (self.cert_file is None) != (self.key_file is None):
            missing = "key_file" if self.key_file is None else "cert_file"
            raise ValueError(f"{missing}: expected a value (cert_file and key_file go together)")
        if self.cert_file is None and self.client_ca_file is not None:
            raise ValueError("client_ca_file: client certificates need cert_file and key_file")
        if self.client_ca_file is not None and self.client_auth_type == "NoClientCert":
            raise ValueError(
                "client_auth_type: client_ca_file is set but client_auth_type is NoClientCert"
            )
        if self.client_ca_file is None and self.client_auth_type != "NoClientCert":
            raise ValueError(f"client_ca_file: expected a value for {self.client_auth_type}")
        if _TLS_VERSIONS[self.min_version] > _TLS_VERSIONS[self.max_version]:
            raise ValueError("min_version: expected a version not above max_version")
        return self

    @property
    def enabled(self) -> bool:
        """Tell whether TLS is configured (no certificate means plain HTTP)."""
        return self.cert_file is not None


class HTTPServerConfig(_Strict):
    """The ``http_server_config`` section: extra response headers (HTTP/1.1 only)."""

    http2: bool = False
    headers: dict[str, str] = {}

    @field_validator("http2")
    @classmethod
    def _http2(cls, value: bool) -> bool:
        if value:
            raise ValueError("HTTP/2 is not supported (aiohttp serves HTTP/1.1); set false")
        return value

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if name not in _HEADERS:
                raise ValueError(f"expected one of {', '.join(sorted(_HEADERS))}, got {name!r}")
        return value


class WebConfig(_Strict):
    """The whole web configuration; the default is plain HTTP without authentication."""

    tls_server_config: TLSServerConfig = TLSServerConfig()
    http_server_config: HTTPServerConfig = HTTPServerConfig()
    basic_auth_users: dict[str, str] = {}

    @field_validator("basic_auth_users")
    @classmethod
    def _hashes(cls, value: dict[str, str]) -> dict[str, str]:
        for user, hashed in value.items():
            # The message names the user, never the hash.
            if not isinstance(hashed, str) or not _BCRYPT.match(hashed):
                raise ValueError(f"{user}: expected a bcrypt hash ($2a$/$2b$/$2y$)")
        return value

    def ssl_context(self) -> ssl.SSLContext | None:
        """Return the server TLS context, or ``None`` for plain HTTP.

        Raises:
            ConfigError: a certificate, key or CA file cannot be read or does not load.

        """
        tls = self.tls_server_config
        if tls.cert_file is None or tls.key_file is None:
            return None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = _TLS_VERSIONS[tls.min_version]
        context.maximum_version = _TLS_VERSIONS[tls.max_version]
        try:
            # Without a password callback OpenSSL would prompt on the terminal for the
            # passphrase of an encrypted key, stalling the start (exporter-toolkit has none).
            context.load_cert_chain(tls.cert_file, tls.key_file, password=_no_passphrase)
        except _EncryptedKeyError:
            raise ConfigError(
                "tls_server_config.key_file",
                f"expected an unencrypted key ({tls.key_file} asks for a passphrase)",
            ) from None
        except (OSError, ssl.SSLError) as exc:
            # The file contents never reach the message, only the paths and the library reason.
            raise ConfigError(
                "tls_server_config.cert_file",
                f"cannot load {tls.cert_file} with {tls.key_file} ({_reason(exc)})",
            ) from None
        if tls.client_ca_file is not None:
            try:
                context.load_verify_locations(cafile=tls.client_ca_file)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(
                    "tls_server_config.client_ca_file",
                    f"cannot load {tls.client_ca_file} ({_reason(exc)})",
                ) from None
        context.verify_mode = _CLIENT_AUTH[tls.client_auth_type]
        return context

    def basic_auth(self) -> BasicAuth | None:
        """Return the basic-auth verifier, or ``None`` when no user is configured."""
        return BasicAuth(self.basic_auth_users) if self.basic_auth_users else None


class _EncryptedKeyError(Exception):
    """Raised by :func:`_no_passphrase`: the key file asks for a passphrase."""


def _no_passphrase() -> bytes:
    raise _EncryptedKeyError


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or type(exc).__name__
    return getattr(exc, "strerror", None) or type(exc).__name__


def load_web_config(path: str | Path) -> WebConfig:
    """Read and validate a web configuration file; relative paths start at its folder.

    Raises:
        ConfigError: the file cannot be read, is not YAML, has an unknown or refused key, a
            bad value, or a certificate that does not load. The key is named; no secret is.

    """
    path = Path(path)
    label = f"--web.config.file {path}"
    data = read_yaml(path, label)  # bounded: size, UTF-8, depth, aliases, duplicate keys
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(label, "expected a mapping at the top level")
    tls = data.get("tls_server_config")
    if isinstance(tls, dict):
        for key, why in _REFUSED.items():
            if key in tls:
                raise ConfigError(f"{label}: tls_server_config.{key}", why)
        data["tls_server_config"] = _resolve(tls, path.parent)
    try:
        config = WebConfig(**data)
    except ValidationError as exc:
        raise _error(label, exc) from None
    try:
        config.ssl_context()  # load the certificates now, so a bad file fails at start
    except ConfigError as exc:
        raise ConfigError(f"{label}: {exc.key}", exc.expected) from None
    return config


def _resolve(tls: Mapping[str, Any], base: Path) -> dict[str, Any]:
    resolved = dict(tls)
    for key in ("cert_file", "key_file", "client_ca_file"):
        value = resolved.get(key)
        if isinstance(value, str) and value.strip():
            resolved[key] = base / value.strip()  # an absolute value replaces the base
        elif isinstance(value, str):
            resolved[key] = None  # exporter-toolkit treats "" as unset
    return resolved


def _error(label: str, exc: ValidationError) -> ConfigError:
    error = exc.errors(include_url=False)[0]
    loc = [str(part) for part in error["loc"]]
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        return ConfigError(f"{label}: {'.'.join(loc)}", f"unknown key {loc[-1]!r}")
    if error["type"] == "value_error" and ": " in message and not message.startswith("expected"):
        # Cross-field checks name the offending key first ("key_file: expected ...").
        key, _, message = message.partition(": ")
        loc = [*loc, key]
    if error["type"] == "literal_error":
        message = _REFUSED_VALUES.get(str(error.get("input")), message)
    message = message.replace("Input should be", "expected")
    return ConfigError(f"{label}: {'.'.join(loc)}", message)


class BasicAuth:
    """Check ``Authorization: Basic`` headers against bcrypt hashes without stalling the loop.

    bcrypt is slow by design (~250 ms at cost 12), so each check runs in a worker thread,
    one at a time (a flood of wrong passwords then costs one core, as in exporter-toolkit),
    and a success is remembered per user for ``cache_seconds``. The cache holds an HMAC of
    the password under a per-process random key, never the password or a plain hash of it,
    and is compared in constant time. It is bounded by the number of configured users.
    """

    def __init__(
        self,
        users: Mapping[str, str],
        *,
        cache_seconds: float = 300.0,
        max_pending: int = 64,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not users:
            raise ValueError("expected at least one user")
        self._users = {user: hashed.encode() for user, hashed in users.items()}
        # Unknown users are checked against a real hash so timing does not reveal names.
        self._decoy = next(iter(self._users.values()))
        self._key = secrets.token_bytes(32)
        self._ok: dict[str, tuple[bytes, float]] = {}
        self._cache_seconds = cache_seconds
        self._max_pending = max_pending
        self._pending = 0
        self._lock = asyncio.Lock()
        self._clock = clock
        #: bcrypt computations run so far (tests and benchmarks read it).
        self.bcrypt_checks = 0

    async def verify(self, authorization: str | None) -> bool:
        """Tell whether an ``Authorization`` header carries a configured user's password."""
        credentials = _parse(authorization)
        if credentials is None:
            return False
        user, password = credentials
        digest = hmac.new(self._key, password, hashlib.sha256).digest()
        cached = self._ok.get(user)
        fresh = cached is not None and cached[1] > self._clock()
        if cached is not None and fresh and hmac.compare_digest(cached[0], digest):
            return True
        if self._pending >= self._max_pending:
            return False  # refuse rather than queue without bound behind a flood
        hashed = self._users.get(user)
        self._pending += 1
        try:
            async with self._lock:
                self.bcrypt_checks += 1
                ok = await asyncio.to_thread(_checkpw, password, hashed or self._decoy)
        finally:
            self._pending -= 1
        if ok and hashed is not None:
            self._ok[user] = (digest, self._clock() + self._cache_seconds)
            return True
        return False


def _parse(authorization: str | None) -> tuple[str, bytes] | None:
    if not authorization:
        return None
    scheme, _, encoded = authorization.strip().partition(" ")
    if scheme.lower() != "basic" or not encoded:
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, sep, password = decoded.partition(b":")
    if not sep:
        return None
    try:
        return user.decode("utf-8"), password
    except UnicodeDecodeError:
        return None


def _checkpw(password: bytes, hashed: bytes) -> bool:
    try:
        return bcrypt.checkpw(password, hashed)
    except ValueError:
        # bcrypt refuses passwords over 72 bytes; such a password never matches.
        return False
