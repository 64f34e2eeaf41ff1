"""CPU time of a process and of everything it started, read from /proc (Linux).

The benchmarks charge a server the CPU of its whole process tree, so a server
that forks (or a postmaster's backends) is measured as a whole, the same way
for every contestant. A child that exits between two readings takes its time
with it, unless its parent reaped it (then it is in the parent's cutime and
cstime, which are added); the servers measured here keep their children.
"""

from __future__ import annotations

import os
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str]:
    """The fields of /proc/<pid>/stat after the command name (which may hold spaces); field 3 is the first."""
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (children, their children...), from each process's parent pid."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int(_stat_fields(int(entry.name))[1])
        except (OSError, IndexError, ValueError):
            continue  # exited while we looked
        children.setdefault(parent, []).append(int(entry.name))
    found: list[int] = []
    pending = [pid]
    while pending:
        below = children.get(pending.pop(), [])
        found += below
        pending += below
    return found


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of ``pid``, its live descendants and the children they reaped (cutime + cstime)."""
    total = 0.0
    for member in (pid, *descendants(pid)):
        try:
            fields = _stat_fields(member)
        except OSError:
            continue  # exited while we looked
        total += sum(int(value) for value in fields[11:15]) / CLOCK_TICKS  # utime stime cutime cstime
    return total
