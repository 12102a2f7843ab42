"""The injection command: captured, redacted, bounded, stopped with its children."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from exporter.drills.inject import OUTPUT_LIMIT, Injection, redact_argv
from exporter.redaction import Redactor
from tests.waiting import wait_for


def _injection(*argv: str, timeout: float = 10.0, secrets: tuple[str, ...] = ()) -> Injection:
    return Injection(argv, timeout=timeout, redactor=Redactor(secrets))


async def test_a_zero_exit_is_ok_and_its_output_kept() -> None:
    """Exit 0: ok, stdout and stderr captured in order."""
    outcome = await _injection("sh", "-c", "echo promoted; echo done >&2").run()
    assert outcome.ok
    assert outcome.exit_code == 0
    assert outcome.output == "promoted\ndone\n"
    assert outcome.summary.startswith("inject command exited 0 after ")


async def test_a_non_zero_exit_is_reported_with_its_last_line() -> None:
    """Exit 3: not ok; the summary names the code and the last line said."""
    outcome = await _injection("sh", "-c", "echo trying; echo 'no leader found'; exit 3").run()
    assert not outcome.ok
    assert outcome.exit_code == 3
    assert outcome.summary.endswith(": no leader found")


async def test_a_command_that_cannot_start_is_an_outcome_not_an_exception() -> None:
    """A missing program is a failed outcome with the error, never a crash."""
    outcome = await _injection("/nonexistent/failover-tool").run()
    assert not outcome.ok
    assert outcome.exit_code is None
    assert outcome.error is not None
    assert outcome.error.startswith("FileNotFoundError")
    assert outcome.summary.startswith("inject command did not start")


async def test_a_timeout_stops_the_whole_process_group(tmp_path: Path) -> None:
    """Past its timeout the command and its children are stopped; it is marked timed out."""
    pid_file = tmp_path / "child.pid"
    script = f"sleep 60 & echo $! > {pid_file}; wait"
    t0 = time.monotonic()
    outcome = await _injection("sh", "-c", script, timeout=0.5).run()
    assert time.monotonic() - t0 < 5
    assert outcome.timed_out
    assert not outcome.ok
    child = int(pid_file.read_text())
    await wait_for(lambda: _gone(child), timeout=5)


def _gone(pid: int) -> bool:
    """Tell whether ``pid`` ended (a zombie waiting for init to reap it counts)."""
    status = Path(f"/proc/{pid}/status")
    return not status.exists() or "State:\tZ" in status.read_text()


async def test_cancelling_stops_the_command_records_it_and_goes_on(tmp_path: Path) -> None:
    """A cancelled drill stops its command, keeps what it printed, and stays cancelled."""
    marker = tmp_path / "running"
    injection = _injection("sh", "-c", f"echo started; touch {marker}; exec sleep 60")
    task = asyncio.create_task(injection.run())
    await wait_for(marker.exists, timeout=5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert injection.outcome is not None
    assert injection.outcome.cancelled
    assert injection.outcome.output == "started\n"
    assert injection.outcome.summary.endswith("the drill was cancelled")


async def test_output_is_redacted_and_only_its_tail_kept() -> None:
    """Known secrets, URL passwords and the argv's secret options never reach the record."""
    script = (
        'echo "dsn postgresql://app:Url-Canary-1@db:5432/x"; echo "known Known-Canary-2"; '
        'echo "given ${1#--password=}"; head -c 20000 /dev/zero | tr "\\0" "x"; echo; echo end'
    )
    args = ("inject", "--password=Argv-Canary-3")  # $0 and $1 of the script
    outcome = await _injection("sh", "-c", script, *args, secrets=("Known-Canary-2",)).run()
    assert len(outcome.output) == OUTPUT_LIMIT
    assert outcome.output.endswith("x\nend\n")
    for canary in ("Url-Canary-1", "Known-Canary-2", "Argv-Canary-3"):
        assert canary not in outcome.output
    assert "Argv-Canary-3" not in " ".join(outcome.argv)
    start = script.split("; head")[0]
    head = await _injection("sh", "-c", start, *args, secrets=("Known-Canary-2",)).run()
    assert head.output == "dsn postgresql://app:***@db:5432/x\nknown ***\ngiven ***\n"


def test_redact_argv_masks_secret_options_both_ways() -> None:
    """``--password=x`` and ``--token x`` are masked; ordinary options are kept."""
    argv = ["tool", "--cluster", "pg", "--password=pw1", "--api-token", "tk2", "-v"]
    assert redact_argv(argv, Redactor()) == (
        "tool",
        "--cluster",
        "pg",
        "--password=***",
        "--api-token",
        "***",
        "-v",
    )
