from __future__ import annotations

import asyncio
import base64
import ssl
import subprocess
import time
from pathlib import Path

import bcrypt
import pytest

from exporter.cli import EXIT_CONFIG, EXIT_OK, main
from exporter.errors import ConfigError
from exporter.telemetry.webconfig import BasicAuth, WebConfig, load_web_config
from tests.pki import CertBundle, make_pki

FAST_HASH = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(4)).decode()


def _header(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> CertBundle:
    """Return a throwaway CA with server and client certificates."""
    return make_pki(tmp_path_factory.mktemp("pki"))


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "web.yml"
    path.write_text(text, encoding="utf-8")
    return path


def _error(tmp_path: Path, text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_web_config(_write(tmp_path, text))
    return info.value


def test_empty_file_means_plain_http_without_auth(tmp_path: Path) -> None:
    """An empty web config serves plain HTTP with no authentication."""
    config = load_web_config(_write(tmp_path, ""))
    assert config == WebConfig()
    assert config.ssl_context() is None
    assert config.basic_auth() is None


def test_relative_paths_resolve_against_the_config_folder(pki: CertBundle) -> None:
    """Certificate paths are relative to the web config file's folder, as in exporter-toolkit."""
    folder = pki.ca_cert.parent
    config = load_web_config(
        _write(
            folder,
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
            "  client_ca_file: ca.crt\n  client_auth_type: RequireAndVerifyClientCert\n"
            "  min_version: TLS13\n"
            f"basic_auth_users:\n  alice: '{FAST_HASH}'\n",
        )
    )
    tls = config.tls_server_config
    assert tls.cert_file == pki.server_cert
    assert tls.client_ca_file == pki.ca_cert
    context = config.ssl_context()
    assert context is not None
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.minimum_version is ssl.TLSVersion.TLSv1_3
    assert config.basic_auth() is not None


@pytest.mark.parametrize(
    ("text", "key", "expected"),
    [
        ("tls_server_confg: {}\n", "tls_server_confg", "unknown key 'tls_server_confg'"),
        ("tls_server_config:\n  certfile: a\n", "tls_server_config.certfile", "unknown key"),
        ("http_server_config:\n  http2: true\n", "http_server_config.http2", "HTTP/2"),
        ("http_server_config:\n  headers: {X-Evil: one}\n", "headers", "X-Frame-Options"),
        ("tls_server_config:\n  cipher_suites: [x]\n", "cipher_suites", "not supported"),
        ("tls_server_config:\n  cert_file: a.crt\n", "key_file", "go together"),
        ("tls_server_config:\n  min_version: TLS10\n", "min_version", "RFC 8996"),
        ("tls_server_config:\n  min_version: TLS14\n", "min_version", "expected 'TLS12'"),
        (
            "tls_server_config:\n  client_auth_type: RequestClientCert\n",
            "client_auth_type",
            "cannot request a client certificate",
        ),
        (
            "tls_server_config:\n  client_auth_type: RequireAndVerifyClientCert\n",
            "client_ca_file",
            "expected a value",
        ),
        (
            "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_ca_file: c\n",
            "client_auth_type",
            "NoClientCert",
        ),
        ("basic_auth_users:\n  bob: plaintext-password\n", "basic_auth_users.bob", "bcrypt"),
        ("http_server_config:\n  headers: {X-Frame-Options: 1}\n", "X-Frame-Options", "string"),
        ("- a list\n", "--web.config.file", "mapping"),
        ("tls_server_config: [\n", "--web.config.file", "not valid YAML"),
    ],
)
def test_bad_web_configs_name_the_key(tmp_path: Path, text: str, key: str, expected: str) -> None:
    """Every rejected web config names the offending key and says what was expected."""
    error = _error(tmp_path, text)
    assert key in error.key
    assert expected in error.expected


def test_a_plaintext_password_is_never_echoed(tmp_path: Path) -> None:
    """A value that is not a bcrypt hash (maybe a password) is not repeated in the error."""
    error = _error(tmp_path, "basic_auth_users:\n  bob: hunter2-canary\n")
    assert "hunter2-canary" not in str(error)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    """A web config file that does not exist is a ConfigError naming the flag."""
    with pytest.raises(ConfigError, match="cannot read the file"):
        load_web_config(tmp_path / "absent.yml")


def test_certificate_problems_surface_at_load(tmp_path: Path, pki: CertBundle) -> None:
    """A missing certificate or a key of another pair fails when the file is loaded."""
    missing = _error(
        tmp_path, f"tls_server_config:\n  cert_file: nope.crt\n  key_file: {pki.server_key}\n"
    )
    assert "cert_file" in missing.key
    assert "nope.crt" in missing.expected
    mismatched = _error(
        tmp_path,
        f"tls_server_config:\n  cert_file: {pki.server_cert}\n  key_file: {pki.client_key}\n",
    )
    assert "cert_file" in mismatched.key
    assert "BEGIN" not in mismatched.expected  # no key material in the message


def test_an_encrypted_key_is_refused_without_prompting(tmp_path: Path, pki: CertBundle) -> None:
    """A passphrase-protected key is a ConfigError naming key_file, never a terminal prompt."""
    encrypted = tmp_path / "encrypted.key"
    command = ["openssl", "pkey", "-in", str(pki.server_key), "-out", str(encrypted)]
    subprocess.run(
        [*command, "-aes256", "-passout", "pass:x"],
        check=True,
        capture_output=True,
        timeout=30,
    )
    error = _error(
        tmp_path, f"tls_server_config:\n  cert_file: {pki.server_cert}\n  key_file: {encrypted}\n"
    )
    assert error.key.endswith("tls_server_config.key_file")
    assert "passphrase" in error.expected


def test_cli_check_config_exits_2_on_unknown_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``check-config --web.config.file`` with an unknown key exits 2 and names the key."""
    path = _write(tmp_path, "basic_auth_user: {}\n")
    with pytest.raises(SystemExit) as info:
        main(["check-config", "--web.config.file", str(path)])
    assert info.value.code == EXIT_CONFIG
    assert "unknown key 'basic_auth_user'" in capsys.readouterr().err


def test_cli_check_config_accepts_a_good_web_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``check-config`` loads a valid web config and exits 0."""
    path = _write(tmp_path, f"basic_auth_users:\n  alice: '{FAST_HASH}'\n")
    with pytest.raises(SystemExit) as info:
        main(["check-config", "--web.config.file", str(path)])
    assert info.value.code == EXIT_OK
    assert "configuration ok" in capsys.readouterr().out


async def test_basic_auth_accepts_only_the_right_password() -> None:
    """Right user and password pass; a wrong password, unknown user or odd header do not."""
    auth = BasicAuth({"alice": FAST_HASH})
    assert await auth.verify(_header("alice", "s3cret"))
    assert not await auth.verify(_header("alice", "wrong"))
    assert not await auth.verify(_header("mallory", "s3cret"))
    for header in (None, "", "Bearer x", "Basic !!!", "Basic " + base64.b64encode(b"x").decode()):
        assert not await auth.verify(header)
    assert not await auth.verify(_header("alice", "x" * 100))  # over bcrypt's 72 bytes


async def test_basic_auth_caches_successes_until_they_expire() -> None:
    """A repeated good password skips bcrypt until the cache entry expires; wrong ones never hit."""
    now = [0.0]
    auth = BasicAuth({"alice": FAST_HASH}, cache_seconds=60.0, clock=lambda: now[0])
    assert await auth.verify(_header("alice", "s3cret"))
    assert await auth.verify(_header("alice", "s3cret"))
    assert auth.bcrypt_checks == 1
    assert not await auth.verify(_header("alice", "s3cret-not"))
    assert auth.bcrypt_checks == 2
    now[0] = 61.0
    assert await auth.verify(_header("alice", "s3cret"))
    assert auth.bcrypt_checks == 3


async def test_unknown_users_cost_a_bcrypt_check_too() -> None:
    """An unknown user is checked against a real hash, so timing does not reveal user names."""
    auth = BasicAuth({"alice": FAST_HASH})
    assert not await auth.verify(_header("nobody", "s3cret"))
    assert auth.bcrypt_checks == 1


async def test_bcrypt_runs_off_the_event_loop() -> None:
    """A cost-12 bcrypt check (~250 ms) never stalls the event loop for more than a tick."""
    slow = bcrypt.hashpw(b"pw", bcrypt.gensalt(12)).decode()
    auth = BasicAuth({"alice": slow})
    gaps: list[float] = []

    async def ticker() -> None:
        last = time.perf_counter()
        while True:
            # Not a wait: a tick every 5 ms measures how long the loop was blocked.
            await asyncio.sleep(0.005)
            gaps.append(time.perf_counter() - last)
            last = time.perf_counter()

    task = asyncio.create_task(ticker())
    t0 = time.perf_counter()
    assert await auth.verify(_header("alice", "pw"))
    elapsed = time.perf_counter() - t0
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert elapsed > 0.05  # the check really was slow...
    assert len(gaps) > 5
    assert max(gaps) < 0.05  # ...and the loop kept ticking
