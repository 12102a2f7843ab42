from __future__ import annotations

import json
import random
import string
import threading
from typing import NamedTuple
from urllib.parse import quote, quote_plus, unquote

import pytest

from exporter import redaction
from exporter.redaction import (
    MASK,
    Redactor,
    is_secret_key,
    redact_bootstrap_servers,
    redact_text,
    redact_url,
)


def _forms(secret: str) -> set[str]:
    """Return the raw, encoded and decoded spellings of a canary worth searching for."""
    forms = {secret, quote(secret, safe=""), quote_plus(secret), unquote(secret)}
    return {form for form in forms if len(form) >= 3}


def _assert_clean(output: str, canaries: tuple[str, ...]) -> None:
    """Fail if any spelling of any canary survived redaction."""
    for canary in canaries:
        for form in _forms(canary):
            assert form not in output, f"{form!r} leaked into {output!r}"


LONG_PASSWORD = "A1b2" * 2500

# (url, canaries that must vanish, hosts that must stay)
URL_CASES = [
    pytest.param(
        "postgresql://u:Zp%40ss:w0rd@host/db?sslpassword=Qx7tok",
        ("Zp%40ss", "Zp@ss", "w0rd", "Qx7tok"),
        ("host",),
        id="brief-example",
    ),
    pytest.param(
        "postgresql://u:Kx9@Qv7@db.internal/app", ("Kx9", "Qv7"), ("db.internal",), id="raw-at"
    ),
    pytest.param(
        "postgresql://u:Kx9:Qv7@db:5432/app", ("Kx9", "Qv7"), ("db:5432",), id="raw-colon"
    ),
    pytest.param("postgresql://u:Kx9/Qv7@db/app", ("Kx9", "Qv7"), ("db",), id="raw-slash"),
    pytest.param("postgresql://u:Kx9?Qv7@db/app", ("Kx9", "Qv7"), ("db",), id="raw-question"),
    pytest.param("postgresql://u:Kx9#Qv7@db/app", ("Kx9", "Qv7"), ("db",), id="raw-hash"),
    pytest.param(
        "postgresql://u:Kx9@Qv7/Lm3?Tz4#Rw5@db.example:5432/app",
        ("Kx9", "Qv7", "Lm3", "Tz4", "Rw5"),
        ("db.example:5432",),
        id="raw-all-reserved",
    ),
    pytest.param("postgresql://u:Kx9%40Qv7@db/app", ("Kx9", "Qv7"), ("db",), id="pct-at"),
    pytest.param("postgresql://u:Kx9%2FQv7@db/app", ("Kx9", "Qv7"), ("db",), id="pct-slash"),
    pytest.param(
        "postgresql://u:" + quote("pässwörd€9", safe="") + "@db/app",
        ("pässwörd€9", "p%C3%A4ssw"),
        ("db",),
        id="unicode-encoded",
    ),
    pytest.param("postgresql://u:pässwörd€9@db/app", ("pässwörd€9",), ("db",), id="unicode-raw"),
    pytest.param(
        "postgresql://u:my%20long%20pw9@db/app", ("my long pw9", "long"), ("db",), id="space"
    ),
    pytest.param(
        f"postgresql://u:{LONG_PASSWORD}@db/app", (LONG_PASSWORD[:12],), ("db",), id="long"
    ),
    pytest.param(
        "postgresql://u:V6pw9xq@[2001:db8::1]:5432/db",
        ("V6pw9xq",),
        ("[2001:db8::1]:5432",),
        id="ipv6",
    ),
    pytest.param(
        "postgresql://u:Mh7pwq@h1:5432,h2:5433,[::1]:5434/db?target_session_attrs=read-write",
        ("Mh7pwq",),
        ("h1:5432,h2:5433,[::1]:5434", "target_session_attrs=read-write"),
        id="multi-host",
    ),
    pytest.param(
        "redis://:Rp4ssw@cache:6379/0", ("Rp4ssw",), ("cache:6379",), id="redis-empty-user"
    ),
    pytest.param("rediss://default:Rp4ssw@cache", ("Rp4ssw",), ("cache", "default"), id="rediss"),
    pytest.param(
        "redis://user:Rp4ssw@cache/0?password=Qx8pw",
        ("Rp4ssw", "Qx8pw"),
        ("cache", "user"),
        id="redis-query-password",
    ),
    pytest.param(
        "SASL_SSL://alice:Kf9pass@broker1:9093", ("Kf9pass",), ("broker1:9093", "alice"), id="kafka"
    ),
    pytest.param("https://api.example/v1#Fr4gTok", ("Fr4gTok",), ("api.example",), id="fragment"),
    pytest.param(
        "postgresql://u:Db9pwz@db/app?x=1&password=Ab1c&Zz9tail&y=2",
        ("Db9pwz", "Ab1c", "Zz9tail"),
        ("db", "x=1", "y=2"),
        id="raw-ampersand-in-value",
    ),
]


@pytest.mark.parametrize(("url", "canaries", "hosts"), URL_CASES)
def test_redact_url_removes_every_canary_and_keeps_hosts(
    url: str, canaries: tuple[str, ...], hosts: tuple[str, ...]
) -> None:
    """Passwords and secret parameters vanish in every spelling while hosts stay visible."""
    output = redact_url(url)
    _assert_clean(output, canaries)
    for host in hosts:
        assert host in output


@pytest.mark.parametrize(("url", "canaries", "hosts"), URL_CASES)
def test_redact_url_mask_hosts_hides_hosts_too(
    url: str, canaries: tuple[str, ...], hosts: tuple[str, ...]
) -> None:
    """With mask_hosts the canaries still vanish and no host name is left."""
    output = redact_url(url, mask_hosts=True)
    _assert_clean(output, canaries)
    for name in ("db.internal", "db.example", "cache", "broker1", "api.example", "2001:db8"):
        assert name not in output


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "postgresql://u:Zp%40ss:w0rd@host/db?sslpassword=Qx7tok",
            "postgresql://u:***@host/db?sslpassword=***",
        ),
        ("postgresql://u:@host/db", "postgresql://u:***@host/db"),
        ("redis://user@host", "redis://user@host"),
        ("redis://user@host:6379/0", "redis://user@host:6379/0"),
        ("postgresql://host:5432/db", "postgresql://host:5432/db"),
        ("postgresql://h1,h2:5433/db", "postgresql://h1,h2:5433/db"),
        ("SASL_SSL://u:p@h:9093", "SASL_SSL://u:***@h:9093"),
        ("redis://:pw@host:6379/0", "redis://:***@host:6379/0"),
        (
            "postgresql://u:pw@/db?host=/run/postgresql",
            "postgresql://u:***@/db?host=/run/postgresql",
        ),
        ("postgres://compose_db:5432/x", "postgres://compose_db:5432/x"),
        ("redis://pw/x@host", "redis://***"),
        ("https://h/path?q=1#frag", "https://h/path?q=1"),
        ("  kafka://b:9092  ", "kafka://b:9092"),
    ],
)
def test_redact_url_exact_output(url: str, expected: str) -> None:
    """Well-formed URLs keep everything except the secret parts, byte for byte."""
    assert redact_url(url) == expected


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u:pw@h1:5432,h2/db", "postgresql://u:***@***:5432,***/db"),
        ("redis://[::1]:6379", "redis://***:6379"),
        ("h:9092", "***:9092"),
        ("postgresql://u@/db?host=/run/pg&port=5432", "postgresql://u@/db?host=***&port=5432"),
    ],
)
def test_redact_url_mask_hosts_keeps_ports(url: str, expected: str) -> None:
    """Masking hosts replaces each host, including libpq's host parameter, but keeps ports."""
    assert redact_url(url, mask_hosts=True) == expected


SECRET_PARAMS = [
    "password",
    "passwd",
    "pwd",
    "sslpassword",
    "token",
    "access_token",
    "client_secret",
    "credentials",
    "auth",
    "authToken",
    "api_key",
    "apikey",
    "access_key",
    "private_key",
    "signature",
    "sig",
    "sasl_plain_password",
    "sasl_plain_username",
    "PASSWORD",
    "X-Api-Key",
    "pass%77ord",
]
PLAIN_PARAMS = [
    "sslmode",
    "application_name",
    "sslkey",
    "sslcert",
    "sslrootcert",
    "connect_timeout",
    "sasl_mechanism",
    "target_session_attrs",
    "options",
]


@pytest.mark.parametrize("key", SECRET_PARAMS)
def test_secret_query_values_are_masked_and_keys_kept(key: str) -> None:
    """A secret query parameter keeps its key and loses its value."""
    output = redact_url(f"postgresql://db/app?sslmode=require&{key}=Cv5canary&x=1")
    assert "Cv5canary" not in output
    assert f"{key}={MASK}" in output
    assert "sslmode=require" in output
    assert "x=1" in output


@pytest.mark.parametrize("key", PLAIN_PARAMS)
def test_plain_query_values_are_kept(key: str) -> None:
    """Non-secret parameters such as sslmode or the sslkey file path stay readable."""
    url = f"postgresql://db/app?{key}=/etc/ssl/value"
    assert redact_url(url) == url


@pytest.mark.parametrize("key", [*SECRET_PARAMS[:-1], "db.password", "Proxy-Authorization"])
def test_is_secret_key_accepts_secret_names(key: str) -> None:
    """Every listed secret-like name is recognised in any case and separator style."""
    assert is_secret_key(key)


@pytest.mark.parametrize("key", [*PLAIN_PARAMS, "host", "user", "username", "signal", "design"])
def test_is_secret_key_rejects_plain_names(key: str) -> None:
    """Ordinary names, including words that merely contain "sig", are not secret."""
    assert not is_secret_key(key)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("garbage", MASK),
        ("", MASK),
        ("not a url at all", MASK),
        ("user:Gb7pass@host:5432", MASK),
        ("Gb7password", MASK),
        ("h:99999999", MASK),
        ("postgresql:/Gb7pass", MASK),
        ("://Gb7pass@host", MASK),
        ("postgresql://u:Gb7pass@bad host/db", "postgresql://***"),
        ("http://h/p?email=a@Gb7pass x", "http://***"),
        ("redis://:Gb7pass", "redis://***"),
        ("b1:9092", "b1:9092"),
        ("[::1]:9092", "[::1]:9092"),
        ("kafka-0.kafka.svc:9093,kafka-1:9093", "kafka-0.kafka.svc:9093,kafka-1:9093"),
    ],
)
def test_unparsable_input_is_masked_and_bare_servers_kept(url: str, expected: str) -> None:
    """Input that is not a URL is masked whole, except a valid plain host:port."""
    assert redact_url(url) == expected


def test_redact_bootstrap_servers_handles_urls_and_plain_servers() -> None:
    """Each bootstrap server is redacted on its own, URL or host:port."""
    servers = ["b1:9092", "SASL_SSL://u:Kb8pass@b2:9093", "no good"]
    assert redact_bootstrap_servers(servers) == ["b1:9092", "SASL_SSL://u:***@b2:9093", MASK]
    assert redact_bootstrap_servers(servers, mask_hosts=True)[:2] == [
        "***:9092",
        "SASL_SSL://u:***@***:9093",
    ]


def test_redact_bootstrap_servers_splits_a_single_string() -> None:
    """A comma-separated string is split like Kafka clients do, not iterated by character."""
    assert redact_bootstrap_servers("b1:9092,SASL_SSL://u:Kb8pass@b2:9093") == [
        "b1:9092",
        "SASL_SSL://u:***@b2:9093",
    ]


def _random_password(rng: random.Random) -> str:
    """Draw a password of 8-24 printable ASCII characters with at least a letter and a digit."""
    alphabet = string.ascii_letters + string.digits + string.punctuation
    body = [rng.choice(alphabet) for _ in range(rng.randint(6, 22))]
    body += [rng.choice(string.ascii_letters), rng.choice(string.digits)]
    rng.shuffle(body)
    return "".join(body)


def test_random_passwords_never_leak() -> None:
    """Five hundred random passwords, raw or percent-encoded, never survive and the host does."""
    rng = random.Random(20240611)
    for _ in range(500):
        password, query_password = _random_password(rng), _random_password(rng)
        userinfo_password = rng.choice([password, quote(password, safe="")])
        url = (
            f"postgresql://user:{userinfo_password}@db.example:5432/app"
            f"?sslpassword={quote(query_password, safe='')}"
        )
        output = redact_url(url)
        for secret in (password, query_password):
            assert secret not in output, url
            assert quote(secret, safe="") not in output, url
        assert "db.example:5432" in output, url


def test_redact_text_scrubs_an_asyncpg_error_with_a_dsn() -> None:
    """A DSN inside an exception message loses its password and secret parameters."""
    message = (
        "connection to postgresql://app:Zp%40ss:w0rd@db.internal:5432/app"
        "?sslpassword=Qx7tok failed: timeout (after 3 attempts)."
    )
    output = redact_text(message)
    _assert_clean(output, ("Zp%40ss", "w0rd", "Qx7tok"))
    assert "db.internal:5432" in output
    assert output.endswith("failed: timeout (after 3 attempts).")


def test_redact_text_scrubs_libpq_keyword_strings() -> None:
    """Keyword/value connection strings keep everything but the password value."""
    output = redact_text("host=h password=s3cret user=u port=5432 passfile='/my pw9'")
    assert output == "host=h password=*** user=u port=5432 passfile='***'"


def test_redact_text_scrubs_json_blobs() -> None:
    """Secret-looking JSON keys lose their values while the document stays valid JSON."""
    blob = json.dumps({"user": "u", "password": "hunter22", "nested": {"api_key": "Ak4zz"}})
    output = redact_text(blob)
    assert json.loads(output) == {"user": "u", "password": MASK, "nested": {"api_key": MASK}}


@pytest.mark.parametrize(
    ("text", "canary"),
    [
        ("sent AUTH s3cret", "s3cret"),
        ("sent AUTH default s3cret to redis", "s3cret"),
        ("command ('AUTH', 'default', 's3cret') failed", "s3cret"),
        ("Authorization: Bearer eyJhbGci.Tk9sig", "eyJhbGci"),
        ("retrying with token: Tk9xyz", "Tk9xyz"),
        ("{'sasl_plain_password': 'Sa5pw', 'sasl_mechanism': 'PLAIN'}", "Sa5pw"),
        ("dsn=host=h password=Kw8pw", "Kw8pw"),
        ("see (redis://u:Rd6pw@cache:6379/0).", "Rd6pw"),
        ('"dsn": "kafka://u:Kk7pw@b:9092"', "Kk7pw"),
    ],
)
def test_redact_text_masks_commands_headers_and_pairs(text: str, canary: str) -> None:
    """Redis AUTH arguments, bearer tokens and secret pairs are masked in free text."""
    assert canary not in redact_text(text)


def test_redact_text_keeps_ordinary_prose() -> None:
    """Text without secrets comes back unchanged."""
    text = 'password authentication failed for user "app"; sslmode: require, retry=3'
    assert redact_text(text) == text


def test_redact_text_replaces_known_secrets_in_every_spelling() -> None:
    """A known secret is found raw, percent-encoded, percent-decoded and JSON-escaped."""
    secret = 'Zp@ss w"rd/9'
    text = " | ".join(
        [secret, quote(secret, safe=""), quote_plus(secret), quote(secret), json.dumps(secret)]
    )
    output = redact_text(text, [secret])
    _assert_clean(output, (secret, "Zp@ss", 'w"rd'))
    assert redact_text("value Zp%40ss9 here", ["Zp@ss9"]) == "value *** here"


def test_redact_text_skips_secrets_shorter_than_three_characters() -> None:
    """One- and two-character secrets are ignored so that ordinary words survive."""
    assert redact_text("a bag of 42 beans", ["a", "42", ""]) == "a bag of 42 beans"
    assert redact_text("a bag of 421 beans", ["421"]) == "a bag of *** beans"


def test_redactor_adds_secrets_and_ignores_empty_ones() -> None:
    """Added secrets are used from the next call on and empty strings are dropped."""
    redactor = Redactor(["Init9al", ""])
    redactor.add("Later7s", "")
    assert redactor.secrets == frozenset({"Init9al", "Later7s"})
    assert redactor("Init9al and Later7s") == "*** and ***"


def test_redactor_add_is_safe_across_threads() -> None:
    """Concurrent adds lose no secret."""
    redactor = Redactor()

    def worker(n: int) -> None:
        for i in range(100):
            redactor.add(f"secret-{n}-{i}")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(redactor.secrets) == 800


class _Pair(NamedTuple):
    name: str
    dsn: str


def test_redactor_redact_mapping_walks_nested_structures() -> None:
    """Nested dicts, lists and tuples lose secret values and credentials in strings."""
    redactor = Redactor(["Kn0wnSecret"])
    event = {
        "event": "connector_started",
        "password": "Pw1zz",
        "enabled": True,
        "detail": "retry with Kn0wnSecret",
        "auth": {"user": "u"},
        "token": None,
        "servers": ["b1:9092", ("SASL_SSL://u:Sx2pw@b2:9093", 3)],
        "pair": _Pair("db", "postgresql://u:Pg3pw@db/app"),
        "nested": {"inner": [{"client_secret": 12345}, {"sslmode": "require"}]},
    }
    output = redactor.redact_mapping(event)
    assert output == {
        "event": "connector_started",
        "password": MASK,
        "enabled": True,
        "detail": "retry with ***",
        "auth": MASK,
        "token": None,
        "servers": ["b1:9092", ("SASL_SSL://u:***@b2:9093", 3)],
        "pair": _Pair("db", "postgresql://u:***@db/app"),
        "nested": {"inner": [{"client_secret": MASK}, {"sslmode": "require"}]},
    }
    assert isinstance(output["pair"], _Pair)
    assert event["password"] == "Pw1zz"


def test_redactor_redact_mapping_survives_cycles() -> None:
    """A self-referencing structure is cut off with the mask instead of recursing forever."""
    loop: list[object] = ["x"]
    loop.append(loop)
    output = Redactor().redact_mapping(loop)
    assert MASK in json.dumps(output, default=str)


def test_all_lists_the_public_api() -> None:
    """__all__ names exactly the mask and the functions and classes the module defines."""
    defined = {
        name
        for name, obj in vars(redaction).items()
        if not name.startswith("_") and getattr(obj, "__module__", None) == redaction.__name__
    }
    assert set(redaction.__all__) == defined | {"MASK"}


def test_an_at_sign_in_a_query_value_never_exposes_the_secret_tail() -> None:
    """With no authority, "?password=x@y" must not turn the password's tail into a host."""
    output = redact_url("postgresql:///db?host=/tmp&password=Sec9ret@TailLeak7")
    assert "TailLeak7" not in output
    assert "Sec9ret" not in output


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "AuthenticationError: WRONGPASS invalid username-password pair",
            "AuthenticationError: WRONGPASS invalid username-password pair",
        ),
        (
            "SaslAuthenticationFailed: Authentication failed for user probe",
            "SaslAuthenticationFailed: Authentication failed for user probe",
        ),
        (
            "AuthenticationError: password=hunter2 rejected",
            "AuthenticationError: password=*** rejected",
        ),
        (
            "AuthenticationError: redis://u:hunter2@h:6379/0",
            "AuthenticationError: redis://u:***@h:6379/0",
        ),
        ("AuthToken: hunter2", "AuthToken: ***"),
        ("Authorization: Bearer hunter2", "Authorization: ***"),
    ],
)
def test_an_exception_name_is_not_a_secret_key_but_its_message_is_still_scrubbed(
    text: str, expected: str
) -> None:
    """A driver's ``XxxError: message`` keeps its message; secrets inside it are still masked."""
    assert redact_text(text) == expected
    assert "hunter2" not in redact_text(text, ["hunter2"])
