"""The failover-drill settings models (re-exported by :mod:`exporter.config`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field

from exporter._frozen import _TABLE, Identifier, PositiveSeconds, _Frozen

__all__ = ["DrillObjectives", "TimescaleFailoverDrillSettings"]


class DrillObjectives(_Frozen):
    """Targets a failover drill is judged against."""

    detection_seconds: PositiveSeconds = 30.0
    rto_seconds: PositiveSeconds = 120.0
    rpo_seconds: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 5.0
    lost_writes: int = Field(0, ge=0)


class TimescaleFailoverDrillSettings(_Frozen):
    """Which Timescale dimensions take part in disaster-recovery drills, and how."""

    enabled: bool = False
    dimensions: tuple[Identifier, ...] = ()
    label: str = Field("timescale-failover-drill", pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    run_fallback: bool = False
    objectives: DrillObjectives = DrillObjectives()
    #: argv of the command that causes the fault (switchover, kill); never run through a shell.
    inject_command: tuple[str, ...] = ()
    inject_timeout_seconds: PositiveSeconds = 120.0
    #: A file holding the bearer token of ``POST /api/v1/drills`` (no token: POST refused).
    token_file: Path | None = None
    #: Run the ``fallback`` scenario this often (never when unset).
    schedule_seconds: PositiveSeconds | None = None
    deadline_seconds: PositiveSeconds = 300.0
    probe_interval_seconds: PositiveSeconds = 1.0
    write_interval_seconds: PositiveSeconds = 0.2
    lock_ttl_seconds: Annotated[float, Field(ge=1, allow_inf_nan=False)] = 30.0
    #: The drill's own table (created by the drill in the write endpoint's database).
    table: str = Field("ingest_failover_drill_writes", pattern=_TABLE.pattern)
