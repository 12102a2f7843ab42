"""The command line: exit codes, one-line errors without tracebacks, redacted manifest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.clirun import run_cli


def test_check_config_accepts_the_embedded_default() -> None:
    """`check-config` with no configuration exits 0."""
    result = run_cli("check-config")
    assert result.returncode == 0, result.stderr
    assert "configuration ok" in result.stdout


def test_check_config_rejects_a_bad_boolean_with_exit_2() -> None:
    """A bad TIMESCALE_FAILOVER_DRILL exits 2 with one line naming it and no traceback."""
    result = run_cli("check-config", TIMESCALE_FAILOVER_DRILL="maybe")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "TIMESCALE_FAILOVER_DRILL" in lines[0]
    assert "Traceback" not in result.stderr


def test_bad_usage_exits_2() -> None:
    """An unknown subcommand is a usage error (exit 2)."""
    assert run_cli("frobnicate").returncode == 2


def test_run_with_a_bad_listen_address_exits_2() -> None:
    """`run --web.listen-address` with garbage is rejected before anything starts."""
    result = run_cli("run", "--web.listen-address", "nowhere")
    assert result.returncode == 2
    assert "web.listen-address" in result.stderr or "listen_address" in result.stderr


def test_missing_config_file_exits_2(tmp_path: Path) -> None:
    """A config file that does not exist exits 2, naming the file."""
    result = run_cli("check-config", "--config.file", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2
    assert "nope.yaml" in result.stderr


@pytest.mark.parametrize(
    ("url", "canaries"),
    [
        (
            "postgresql://u:Zp%40ss:w0rd@host/db?sslpassword=Qx7tok",
            ("Zp%40ss", "Zp@ss", "w0rd", "Qx7tok"),
        ),
        ("postgresql://u:Zp@ss/w0rd@host:5432/db?password=Qx7tok", ("Zp@ss", "w0rd", "Qx7tok")),
        ("postgres://u:a%2Fb%3Ac@host/db?token=Tk9zz&sslmode=require", ("a%2Fb", "a/b", "Tk9zz")),
    ],
)
def test_manifest_never_prints_a_password(url: str, canaries: tuple[str, ...]) -> None:
    """`manifest` prints redacted JSON with none of the password's forms, hosts still visible."""
    result = run_cli(
        "manifest",
        TIMESCALEDB_URL=url,
        REDIS_URL="redis://default:R3dis-Cn7@cache:6379/0",
        KAFKA_SECURITY_PROTOCOL="SASL_SSL",
        KAFKA_SASL_MECHANISM="SCRAM-SHA-512",
        KAFKA_SASL_USERNAME="kafka-svc",
        KAFKA_SASL_PASSWORD="Kf-Cn7-pw",
    )
    assert result.returncode == 0, result.stderr
    for canary in (*canaries, "R3dis-Cn7", "Kf-Cn7-pw"):
        assert canary not in result.stdout + result.stderr
    data = json.loads(result.stdout)
    timescale = data["deployments"][0]["connectors"][0]
    assert timescale["name"] == "timescale"
    assert "host" in timescale["endpoint"]
    assert "***" in timescale["endpoint"]


def test_manifest_includes_failover_metadata_when_drills_are_on() -> None:
    """With drills enabled the manifest output carries the failover metadata."""
    result = run_cli(
        "manifest",
        INGEST_DIMENSIONS="daily_bars,macro_events",
        TIMESCALE_FAILOVER_DRILL="true",
        TIMESCALE_FAILOVER_DRILL_DIMENSIONS="daily_bars",
        TIMESCALE_FAILOVER_DRILL_LABEL="q4-dr",
    )
    assert result.returncode == 0, result.stderr
    failover = json.loads(result.stdout)["failover"]
    assert failover["enabled"] is True
    assert failover["dimensions"] == ["daily_bars"]
    assert failover["label"] == "q4-dr"


@pytest.mark.parametrize("command", ["manifest", "probe"])
def test_an_unknown_deployment_exits_2_naming_the_known_ones(command: str) -> None:
    """`--deployment` with a name that is not configured is a usage error listing the names."""
    result = run_cli(command, "--deployment", "nowhere", INGEST_DEPLOYMENT="eu-primary")
    assert result.returncode == 2
    assert "--deployment" in result.stderr
    assert "eu-primary" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (("check-config", "--password=Cn7secret"), {}),
        (("check-config", "postgresql://u:Cn7secret@h"), {}),
        (("Cn7secret",), {}),
        (("probe", "--format", "Cn7secret"), {}),
        (("probe", "--deployment", "postgresql://u:Cn7secret@h/db"), {}),
        (("manifest", "--deployment", "svc:Cn7secret"), {}),
        (
            ("check-config",),
            {"INGEST_DIMENSIONS": "a", "TIMESCALE_FAILOVER_DRILL_DIMENSIONS": "u:Cn7secret@h"},
        ),
        (("check-config",), {"INGEST_DEPLOYMENT": "svc:Cn7secret"}),
        (("check-config",), {"INGEST_DIMENSIONS": "a,svc:Cn7secret"}),
        (("check-config",), {"KAFKA_SECURITY_PROTOCOL": "svc:Cn7secret"}),
        (("check-config",), {"INGEST_DIMENSIONS": "a", "KAFKA_INGEST_TOPICS": "svc=Cn7secret:t"}),
    ],
)
def test_usage_and_config_errors_never_echo_a_credential_shape(
    args: tuple[str, ...], env: dict[str, str]
) -> None:
    """Leak 4: unknown arguments, --deployment and list or user:secret values are not quoted."""
    result = run_cli(*args, **env)
    assert result.returncode == 2
    assert "Cn7secret" not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def test_a_credential_shaped_topic_key_in_the_file_is_never_echoed(tmp_path: Path) -> None:
    """Leak 4: a `user:secret` key of kafka.ingest_topics is named by its mapping only."""
    path = tmp_path / "c.yaml"
    path.write_text('dimensions: [a]\nkafka: {ingest_topics: {"svc:Cn7secret": t}}\n')
    result = run_cli("check-config", "--config.file", str(path))
    assert result.returncode == 2
    assert "kafka.ingest_topics" in result.stderr
    assert "Cn7secret" not in result.stderr


def test_usage_errors_still_say_what_was_wrong() -> None:
    """A refused choice still names the option and the choices, only not the value given."""
    result = run_cli("probe", "--format", "yaml")
    assert result.returncode == 2
    assert "--format" in result.stderr
    assert "table" in result.stderr


@pytest.mark.parametrize(
    ("flag", "content"),
    [
        ("--config.file", b"probes:\n  interval_seconds: \xff\n"),
        ("--config.file", b"probes: " + b"{a: " * 20000 + b"1" + b"}" * 20000 + b"\n"),
        (
            "--config.file",
            b"a: &a [x, x, x, x]\n"
            + b"".join(
                b"%c: &%c [*%c, *%c, *%c, *%c]\n" % ((98 + i,) * 2 + (97 + i,) * 4)
                for i in range(20)
            ),
        ),
        ("--web.config.file", b"basic_auth_users: \xfe\n"),
        ("--config.file", b"probes: {interval_seconds: 5, interval_seconds: 7}\n"),
        ("--config.file", b"timescale: {pool_max_size: " + b"9" * 5000 + b"}\n"),
    ],
)
def test_a_hostile_file_exits_2_in_one_line(tmp_path: Path, flag: str, content: bytes) -> None:
    """Crashes 2-3: non-UTF-8, deeply nested, alias-bomb and duplicate-key files exit 2."""
    path = tmp_path / "hostile.yaml"
    path.write_bytes(content)
    result = run_cli("check-config", flag, str(path))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr[-500:]
    assert "hostile.yaml" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("flag", ["--config.file", "--web.config.file"])
def test_dev_zero_as_a_config_file_exits_2(flag: str) -> None:
    """Crash 2: /dev/zero is read up to the size limit, not forever."""
    result = run_cli("check-config", flag, "/dev/zero")
    assert result.returncode == 2
    assert "larger than" in result.stderr


def test_a_huge_integer_in_the_environment_exits_2() -> None:
    """A 5,000-digit value in the environment is refused in one line and not echoed."""
    result = run_cli("check-config", TIMESCALE_POOL_MAX_SIZE="9" * 5000)
    assert result.returncode == 2
    assert "TIMESCALE_POOL_MAX_SIZE" in result.stderr
    assert "9" * 50 not in result.stderr
