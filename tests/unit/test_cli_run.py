"""``ingest-exporter run`` in-process: the exit codes of the graceful, listen and forced paths.

``main`` really parses, configures, runs and exits (``SystemExit``); only the two functions
that end the process with ``os._exit`` are recorded instead, so the test process survives.
The scripted probes send the signals themselves, at the moments that matter.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket

import pytest

from exporter import cli

from .fakes.probes import ProbeScript

pytestmark = pytest.mark.usefixtures("restore_logging")


@pytest.fixture
def exits(
    monkeypatch: pytest.MonkeyPatch, offline_environ: dict[str, str]
) -> list[tuple[str, int]]:
    """Record ``_exit_soon``/``_exit_now`` calls in order; point every service at a refusal."""
    calls: list[tuple[str, int]] = []
    monkeypatch.setattr(cli, "_exit_soon", lambda code: calls.append(("soon", code)))
    monkeypatch.setattr(cli, "_exit_now", lambda code: calls.append(("now", code)))
    for name, value in (offline_environ | {"INGEST_LOG_FORMAT": "json"}).items():
        monkeypatch.setenv(name, value)
    return calls


def run(*args: str) -> int:
    """Run ``main(["run", ...])`` and return its exit code."""
    with pytest.raises(SystemExit) as ended:
        cli.main(["run", *args])
    code = ended.value.code
    assert isinstance(code, int)
    return code


def sigterm_on_first_probe(probes: ProbeScript) -> None:
    """Make the first probe call send SIGTERM to this process (the daemon is up by then)."""

    async def on_call(connector: str) -> None:
        if sum(probes.calls.values()) == 1:
            os.kill(os.getpid(), signal.SIGTERM)

    probes.on_call = on_call


def test_sigterm_exits_0_through_the_graceful_stop(
    exits: list[tuple[str, int]], probes: ProbeScript, capsys: pytest.CaptureFixture[str]
) -> None:
    """SIGTERM: the stop completes, the bounded exit is armed with 0, and main exits 0."""
    sigterm_on_first_probe(probes)
    assert run("--web.listen-address", "127.0.0.1:0") == cli.EXIT_OK
    assert exits == [("soon", cli.EXIT_OK)]
    stderr = capsys.readouterr().err
    assert '"exporter_stopped"' in stderr
    assert "unit-test-pw" not in stderr
    assert "Traceback" not in stderr


def test_a_taken_address_exits_3_with_one_line(
    exits: list[tuple[str, int]], probes: ProbeScript, capsys: pytest.CaptureFixture[str]
) -> None:
    """A listen address in use: exit 3 and one line naming it, no traceback, no probe run."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        assert run("--web.listen-address", f"127.0.0.1:{port}") == cli.EXIT_LISTEN
    stderr = capsys.readouterr().err
    failures = [line for line in stderr.splitlines() if line.startswith("ingest-exporter:")]
    assert len(failures) == 1
    assert failures[0].startswith(f"ingest-exporter: cannot listen on 127.0.0.1:{port}")
    assert "Traceback" not in stderr
    assert exits == []
    assert probes.calls == {}


def test_a_second_sigint_during_the_stop_exits_130_at_once(
    exits: list[tuple[str, int]],
    probes: ProbeScript,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SIGINT, then SIGINT again while the stop waits on a stuck probe: exit 130 at once."""
    cancelled, release = asyncio.Event(), asyncio.Event()

    def exit_now(code: int) -> None:
        exits.append(("now", code))
        release.set()  # the process would have ended here: let the test's stop finish

    monkeypatch.setattr(cli, "_exit_now", exit_now)
    stuck = probes.stubborn_kafka(
        cancelled, release, then=lambda: os.kill(os.getpid(), signal.SIGINT)
    )

    async def on_call(connector: str) -> None:
        if connector == "kafka" and probes.calls["kafka"] == 2:
            os.kill(os.getpid(), signal.SIGINT)  # the first Ctrl-C, during the stuck cycle
        await stuck(connector)

    probes.on_call = on_call
    # The stop cancels the stuck probe; it swallows that and sends the second SIGINT.
    code = run("--web.listen-address", "127.0.0.1:0")
    assert exits == [("now", cli.EXIT_INTERRUPTED), ("soon", cli.EXIT_OK)]
    assert cancelled.is_set()
    stderr = capsys.readouterr().err
    assert '"exporter_forced_exit"' in stderr
    assert "Traceback" not in stderr
    # Past the recorded os._exit the test let the stop finish; main then exits normally.
    assert code == cli.EXIT_OK
