"""How much of the CPUs other processes used while the benchmarks ran.

The 1-min load average at the end of a run counts the suite's own work (its thread pools,
TensorFlow's subprocesses), so it called every full run "busy". Linux's /proc/stat counts
the CPU time of everything (hypervisor steal included); less this process's and its finished
children's (getrusage), what is left is what others used.
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path

_STAT = Path("/proc/stat")
# /proc/stat "cpu" columns that are work: user nice system idle iowait irq softirq steal (guest
# time is inside user already); steal is a neighbour on the same host
_BUSY_COLUMNS = (0, 1, 2, 5, 6, 7)


@dataclass(frozen=True)
class CpuClock:
    """Wall time, all CPU time spent on the machine (None off Linux) and this process tree's."""

    wall: float
    machine: float | None
    own: float


def now() -> CpuClock:
    return CpuClock(time.monotonic(), _machine_cpu_seconds(), _own_cpu_seconds())


def others_share(start: CpuClock, end: CpuClock, cpus: int) -> float | None:
    """Share 0..1 of the ``cpus`` that other processes kept busy between two clocks; None when
    unknown (no /proc/stat, or no time passed)."""
    wall = end.wall - start.wall
    if start.machine is None or end.machine is None or wall <= 0:
        return None
    others = (end.machine - start.machine) - (end.own - start.own)
    return min(1.0, max(0.0, others / (wall * cpus)))


def _machine_cpu_seconds() -> float | None:
    try:
        fields = _STAT.read_text().splitlines()[0].split()
    except OSError:
        return None
    if fields[0] != "cpu":
        return None
    ticks = sum(int(fields[1 + column]) for column in _BUSY_COLUMNS)
    return ticks / os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds() -> float:
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total
