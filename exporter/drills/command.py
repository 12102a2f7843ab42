"""``ingest-exporter drill``: run one drill from the command line, print its record.

On a terminal the command shows the phase it is in and the time elapsed (on stderr); the
record goes to stdout as markdown (on a terminal) or JSON. SIGTERM or Ctrl-C ends the drill
``aborted``; its record is stored all the same. The exit code is decided by the CLI from the
result (:func:`exit_ok`).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import Sequence
from typing import TextIO

from exporter.config import IngestSettings
from exporter.drills.record import DrillResult
from exporter.drills.report import FailoverDrillSnapshot
from exporter.redaction import Redactor

__all__ = ["exit_ok", "run_drill_command"]

#: How often the terminal status line is redrawn.
_TICK = 0.2


def exit_ok(snapshot: FailoverDrillSnapshot) -> bool:
    """Tell whether the drill's result means success (only ``ok`` does)."""
    return snapshot.result is DrillResult.OK


async def run_drill_command(
    settings: IngestSettings,
    redactor: Redactor,
    *,
    scenario: str,
    dimensions: Sequence[str] = (),
    deployment: str | None = None,
    fmt: str | None = None,
    out: TextIO | None = None,
    status: TextIO | None = None,
) -> FailoverDrillSnapshot:
    """Run one drill (lock, record, span) against ``deployment`` and print its record.

    Raises:
        DrillRefused: the drill cannot run as asked (nothing was started).
        DrillBusy: a drill with this label already runs.
        ConnectorError: Redis, which holds the drill lock, cannot be reached.
    """
    from exporter.drills.plan import plan_failover_drill
    from exporter.provisioner import InstitutionalIngestProvisioner
    from exporter.telemetry.tracing import configure_tracing, shutdown_tracing, tracer_for

    out = out or sys.stdout
    status = status or sys.stderr
    initiator = f"cli:{_user()}"
    plan = plan_failover_drill(
        settings,
        scenario=scenario,
        deployment=deployment,
        dimensions=dimensions,
        initiator=initiator,
    )
    provider = configure_tracing(redactor=redactor)
    provisioner = InstitutionalIngestProvisioner(
        settings, redactor=redactor, tracer=tracer_for(provider)
    )
    services = provisioner.provision(deployment=plan.deployment)
    from exporter.drills.service import run_failover_drill

    progress = _Progress(plan.drill_id, status) if status.isatty() else None
    finished: list[FailoverDrillSnapshot] = []
    await services.start(supervise=False)
    drill = asyncio.create_task(
        run_failover_drill(
            services,
            plan,
            tracer=provisioner.tracer,
            on_phase=progress.phase if progress is not None else None,
            on_finished=finished.append,
        ),
        name=f"drill:{plan.drill_id}",
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        # A signal only cancels the drill: it ends aborted and its record is still stored.
        loop.add_signal_handler(sig, drill.cancel)
    try:
        snapshot = await drill
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if not finished or (current is not None and current.cancelling()):
            raise
        snapshot = finished[0]
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        if progress is not None:
            progress.close()
        await services.stop()
        await shutdown_tracing(provider, timeout=2.0)
    chosen = fmt or ("markdown" if out.isatty() else "json")
    out.write(
        snapshot.to_markdown() if chosen == "markdown" else snapshot.model_dump_json(indent=2)
    )
    out.write("\n")
    out.flush()
    return snapshot


def _user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


class _Progress:
    """A status line on a terminal: the drill's phase and the time elapsed."""

    def __init__(self, drill_id: str, stream: TextIO) -> None:
        self._drill_id = drill_id
        self._stream = stream
        self._phase = "starting"
        self._t0 = time.monotonic()
        self._task = asyncio.create_task(self._draw(), name="drill-progress")

    def phase(self, name: str) -> None:
        """Show ``name`` as the current phase."""
        self._phase = name

    async def _draw(self) -> None:
        while True:
            elapsed = time.monotonic() - self._t0
            self._write(f"\r\x1b[K drill {self._drill_id}: {self._phase} ({elapsed:.1f}s)")
            await asyncio.sleep(_TICK)

    def _write(self, text: str) -> None:
        # A terminal that went away must not fail the drill.
        with contextlib.suppress(OSError, ValueError):
            self._stream.write(text)
            self._stream.flush()

    def close(self) -> None:
        """Stop drawing and clear the line."""
        self._task.cancel()
        self._write("\r\x1b[K")
