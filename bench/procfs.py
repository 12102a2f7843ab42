"""Read a process's CPU time and memory from /proc (Linux), for any process the bench watches."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "CpuMeter",
    "ProcessUsage",
    "cpu_seconds",
    "parse_stat_cpu_ticks",
    "parse_status_rss",
    "rss_bytes",
    "usage",
]

PROC = Path("/proc")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def parse_stat_cpu_ticks(text: str) -> int:
    """Return utime + stime (clock ticks) from the text of ``/proc/<pid>/stat``.

    The second field, the command name, is in parentheses and may itself hold spaces and
    parentheses, so the fields are counted from the last ``)``.
    """
    close = text.rfind(")")
    if close < 0:
        raise ValueError("not a /proc/<pid>/stat line: no command name")
    fields = text[close + 2 :].split()
    # After the name: state is field 3, utime field 14 and stime field 15 (proc(5), 1-based).
    if len(fields) < 13:
        raise ValueError("not a /proc/<pid>/stat line: too few fields")
    return int(fields[11]) + int(fields[12])


def parse_status_rss(text: str) -> int:
    """Return the resident set size in bytes from the text of ``/proc/<pid>/status``."""
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            number, unit = line.split()[1:3]
            if unit != "kB":
                raise ValueError(f"unexpected VmRSS unit {unit!r}")
            return int(number) * 1024
    # Kernel threads and zombies have no VmRSS line: they hold no user memory.
    return 0


def cpu_seconds(pid: int) -> float:
    """Return the user + system CPU seconds process ``pid`` has used so far."""
    return parse_stat_cpu_ticks((PROC / str(pid) / "stat").read_text()) / CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    """Return the resident set size of process ``pid`` in bytes."""
    return parse_status_rss((PROC / str(pid) / "status").read_text())


@dataclass(frozen=True)
class ProcessUsage:
    """CPU seconds and resident memory of one process at one moment."""

    cpu_seconds: float
    rss_bytes: int


def usage(pid: int) -> ProcessUsage:
    """Return the current usage of process ``pid``."""
    return ProcessUsage(cpu_seconds(pid), rss_bytes(pid))


class CpuMeter:
    """Sum the CPU a changing set of processes spends between two readings.

    PostgreSQL serves each session in its own backend process; the bench finds those by
    ``application_name``. A backend that exits between readings takes its CPU with it, so
    the sum is a lower bound; ``lost`` counts such backends so the report can say so.
    """

    def __init__(self) -> None:
        self._start: dict[int, float] = {}
        self.lost = 0

    @staticmethod
    def _read(pids: Iterable[int]) -> dict[int, float]:
        found: dict[int, float] = {}
        for pid in pids:
            try:
                found[pid] = cpu_seconds(pid)
            except (FileNotFoundError, ProcessLookupError):
                continue  # exited between the listing and the read: nothing left to count
        return found

    def start(self, pids: Iterable[int]) -> None:
        """Take the first reading of ``pids``."""
        self._start, self.lost = self._read(pids), 0

    def stop(self, pids: Iterable[int]) -> float:
        """Return the CPU seconds ``pids`` used since :meth:`start` (new ones count whole)."""
        now = self._read(pids)
        self.lost = len(set(self._start) - set(now))
        return sum(value - self._start.get(pid, 0.0) for pid, value in now.items())
