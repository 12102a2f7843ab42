"""Timescale failover drills that measure: detection, promotion, RTO and RPO.

The room's modules: :mod:`~exporter.drills.plan` (what a drill will do),
:mod:`~exporter.drills.inject` (the operator's injection command),
:mod:`~exporter.drills.writer` and :mod:`~exporter.drills.watch` (the measurement),
:mod:`~exporter.drills.measure` (readings and RPO), :mod:`~exporter.drills.verdict`,
:mod:`~exporter.drills.report` (the record), :mod:`~exporter.drills.lock` and
:mod:`~exporter.drills.store` (Redis), :mod:`~exporter.drills.runner` (the phases).
"""

from __future__ import annotations

from exporter.drills.plan import DrillPlan, Scenario, plan_failover_drill
from exporter.drills.record import DrillResult
from exporter.drills.report import FailoverDrillSnapshot
from exporter.drills.runner import execute_failover_drill

__all__ = [
    "DrillPlan",
    "DrillResult",
    "FailoverDrillSnapshot",
    "Scenario",
    "execute_failover_drill",
    "plan_failover_drill",
]
