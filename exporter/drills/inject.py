"""Run the operator's injection command: captured, redacted, bounded, never through a shell.

The exporter itself never stops or promotes a server. A game-day drill runs the command the
operator configured (``failover_drill.inject_command``: a ``patronictl switchover``, a
``kubectl cnpg promote``, or ``scripts/timescale-failover.sh`` for the local stack) and
records what it said and how it ended. A non-zero exit, a timeout or a command that cannot
start is a failed ``failover`` component of the drill, not an exception.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass

from exporter._cleanup import shielded
from exporter.redaction import Redactor, option_secrets

__all__ = ["OUTPUT_LIMIT", "Injection", "InjectionOutcome", "redact_argv"]

#: Characters of output kept in the record (the tail: errors come last).
OUTPUT_LIMIT = 4_000
#: How long a command asked to stop (SIGTERM) gets before SIGKILL.
_TERM_GRACE = 1.0


def redact_argv(argv: Sequence[str], redactor: Redactor) -> tuple[str, ...]:
    """Return ``argv`` with secret-named options' values and every known secret masked."""
    scrub = Redactor([*redactor.secrets, *option_secrets(argv)])
    return tuple(scrub(arg) for arg in argv)


@dataclass(frozen=True, slots=True)
class InjectionOutcome:
    """How the injection command ended; every string already redacted."""

    argv: tuple[str, ...]
    started_at: float
    finished_at: float
    exit_code: int | None
    output: str
    timed_out: bool = False
    cancelled: bool = False
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Tell whether the command ran to a zero exit."""
        return self.exit_code == 0 and not self.timed_out and not self.cancelled

    @property
    def summary(self) -> str:
        """Return one line saying how the command ended."""
        took = f"{self.finished_at - self.started_at:.2f}s"
        if self.error is not None:
            return f"inject command did not start: {self.error}"
        if self.timed_out:
            return f"inject command timed out after {took} and was killed"
        if self.cancelled:
            return f"inject command stopped after {took}: the drill was cancelled"
        tail = self.output.strip().splitlines()[-1:] if self.exit_code else []
        said = f": {tail[0][:160]}" if tail else ""
        return f"inject command exited {self.exit_code} after {took}{said}"


class Injection:
    """One run of the injection command; :attr:`outcome` is set however the run ends."""

    def __init__(self, argv: Sequence[str], *, timeout: float, redactor: Redactor) -> None:
        self._argv = tuple(argv)
        self._timeout = timeout
        # The command's own secrets too: its output may echo what its argv was given.
        self._redact = Redactor([*redactor.secrets, *option_secrets(self._argv)])
        self.outcome: InjectionOutcome | None = None

    async def run(self) -> InjectionOutcome:
        """Run the command to its end (or its timeout); on cancellation stop it, then re-raise."""
        argv = tuple(self._redact(arg) for arg in self._argv)
        started = time.time()
        try:
            process = await asyncio.create_subprocess_exec(
                *self._argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                # Its own process group: a timeout or a cancel stops its children too.
                start_new_session=True,
            )
        except OSError as exc:
            error = self._redact(f"{type(exc).__name__}: {exc.strerror or exc}")
            self.outcome = InjectionOutcome(argv, started, time.time(), None, "", error=error)
            return self.outcome
        chunks: list[bytes] = []
        reader = asyncio.create_task(_read_all(process, chunks), name="inject-output")
        waiter = asyncio.create_task(process.wait(), name="inject-wait")
        timed_out = cancelled = False
        try:
            # asyncio.wait never cancels what it waits for: the timeout leaves both running.
            done, _ = await asyncio.wait({waiter}, timeout=self._timeout)
            timed_out = not done
            if done:
                # A child that keeps the pipe open must not hold the drill past the exit.
                await asyncio.wait({reader}, timeout=_TERM_GRACE)
        except asyncio.CancelledError:
            cancelled = True
            raise
        finally:
            if process.returncode is None:
                await shielded(
                    _stop(process, waiter), timeout=3 * _TERM_GRACE, event="drill_inject_stop"
                )
                # What it printed before it was stopped is still in the pipe: read it.
                await asyncio.wait({reader}, timeout=_TERM_GRACE / 2)
            for task in (reader, waiter):
                task.cancel()
            await asyncio.gather(reader, waiter, return_exceptions=True)
            self.outcome = InjectionOutcome(
                argv,
                started,
                time.time(),
                process.returncode,
                self._redact(b"".join(chunks).decode("utf-8", "replace"))[-OUTPUT_LIMIT:],
                timed_out=timed_out,
                cancelled=cancelled,
            )
        return self.outcome


async def _read_all(process: asyncio.subprocess.Process, chunks: list[bytes]) -> None:
    stream = process.stdout
    if stream is None:
        return
    kept = 0
    while chunk := await stream.read(4096):
        chunks.append(chunk)
        kept += len(chunk)
        # Keep a bounded tail: a chatty command must not grow the exporter's memory.
        while kept > 4 * OUTPUT_LIMIT and len(chunks) > 1:
            kept -= len(chunks.pop(0))


async def _stop(process: asyncio.subprocess.Process, waiter: asyncio.Task[int]) -> None:
    """Stop the command's process group: SIGTERM, then SIGKILL after a grace period."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        # The group may be gone already (the command ended between the check and here).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        done, _ = await asyncio.wait({waiter}, timeout=_TERM_GRACE)
        if done:
            return
