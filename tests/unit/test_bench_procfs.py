from __future__ import annotations

import os

import pytest

from bench.procfs import (
    CpuMeter,
    cpu_seconds,
    parse_stat_cpu_ticks,
    parse_status_rss,
    rss_bytes,
    usage,
)

# A real /proc/<pid>/stat line: utime (field 14) is 1500 ticks, stime (field 15) is 250.
STAT = (
    "4242 (ingest-exporter) S 1 4242 4242 0 -1 4194560 30000 0 12 0 1500 250 0 0 20 0 "
    "9 0 123456 512000000 18000 18446744073709551615 1 1 0 0 0 0 0 16781312 17410 0 0 0 "
    "17 1 0 0 0 0 0"
)


def test_stat_cpu_ticks_are_utime_plus_stime() -> None:
    """User and system ticks are summed; the other counters are ignored."""
    assert parse_stat_cpu_ticks(STAT) == 1750


def test_stat_survives_a_command_name_with_spaces_and_parentheses() -> None:
    """The command name may hold spaces and ')' itself: fields count from the last ')'."""
    tricky = STAT.replace("(ingest-exporter)", "(a ) b (c))")
    assert parse_stat_cpu_ticks(tricky) == 1750


def test_stat_refuses_text_that_is_not_a_stat_line() -> None:
    """A truncated or foreign line is an error, never a CPU time of zero."""
    with pytest.raises(ValueError, match="no command name"):
        parse_stat_cpu_ticks("4242 ingest S 1")
    with pytest.raises(ValueError, match="too few fields"):
        parse_stat_cpu_ticks("4242 (ingest) S 1 2 3")


def test_status_rss_is_read_in_bytes() -> None:
    """VmRSS is given in kB by the kernel and returned in bytes."""
    status = "Name:\tpython3\nVmPeak:\t  900000 kB\nVmRSS:\t   75264 kB\nThreads:\t4\n"
    assert parse_status_rss(status) == 75264 * 1024


def test_status_without_rss_holds_no_memory() -> None:
    """A kernel thread's status has no VmRSS line: it holds no user memory."""
    assert parse_status_rss("Name:\tkthreadd\nState:\tS (sleeping)\n") == 0


def test_readers_see_this_process() -> None:
    """The readers agree with what the kernel says about the test process itself."""
    pid = os.getpid()
    assert cpu_seconds(pid) > 0
    assert rss_bytes(pid) > 1024 * 1024
    now = usage(pid)
    assert now.cpu_seconds >= cpu_seconds(pid) - 1.0
    assert now.rss_bytes > 0


def test_cpu_meter_counts_gone_processes_as_lost() -> None:
    """A process gone since the first reading is counted as lost, and adds nothing."""
    meter = CpuMeter()
    pid = os.getpid()
    meter.start([pid, 2**22 + 1])  # the second pid cannot exist (above pid_max's default)
    sum(range(200_000))  # spend a little CPU between the readings
    assert meter.stop([pid]) >= 0.0
    assert meter.lost == 0
    meter.start([pid])
    assert meter.stop([]) == 0.0
    assert meter.lost == 1
