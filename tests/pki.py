"""A throwaway certificate authority for TLS tests, made with the ``openssl`` command."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

_CURVE = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


@dataclass(frozen=True)
class CertBundle:
    """Paths of a CA, a server pair for 127.0.0.1/localhost and a client pair."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def _leaf(folder: Path, name: str, cn: str, extensions: str) -> None:
    _openssl(
        "req", *_CURVE, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", cn, cwd=folder
    )
    (folder / f"{name}.ext").write_text(extensions, encoding="utf-8")
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-out", f"{name}.crt", "-extfile", f"{name}.ext",
        cwd=folder,
    )  # fmt: skip


def make_pki(folder: Path) -> CertBundle:
    """Create the CA, server and client certificates in ``folder`` (about 50 ms)."""
    folder.mkdir(parents=True, exist_ok=True)
    _openssl(
        "req", "-x509", *_CURVE, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
        "-subj", "/CN=ingest-exporter test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=folder,
    )  # fmt: skip
    common = "authorityKeyIdentifier=keyid\nbasicConstraints=CA:FALSE\n"
    _leaf(
        folder,
        "server",
        "/CN=127.0.0.1",
        common + "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    )
    _leaf(folder, "client", "/CN=prometheus", common + "extendedKeyUsage=clientAuth\n")
    return CertBundle(
        ca_cert=folder / "ca.crt",
        ca_key=folder / "ca.key",
        server_cert=folder / "server.crt",
        server_key=folder / "server.key",
        client_cert=folder / "client.crt",
        client_key=folder / "client.key",
    )
