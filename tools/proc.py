"""What the soak, the benchmarks and the tests read about a process, from /proc (Linux).

One reader, so that every report counts a worker's children, CPU time and memory the same way:
:func:`live_children` (the gunicorn workers of a master), :func:`cpu_seconds` and
:func:`memory`. Figures are in the kernel's own units (KiB, clock ticks turned into seconds);
each report converts to the unit it prints. A process that is gone reads as no children,
0.0 seconds and no memory figures, never as an error: workers come and go while they are read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


def _stat_fields(pid: int | str) -> list[str]:
    """The fields of /proc/<pid>/stat after the command name (which may hold spaces and ')'),
    so that ``[0]`` is the state and ``[1]`` the parent pid; OSError if the process is gone."""
    with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
        return handle.read().rsplit(")", 1)[1].split()


def live_children(pid: int) -> list[int]:
    """The live child processes of ``pid``, sorted.

    Every /proc/<pid>/stat is read: /proc/<pid>/task/<pid>/children would list only the
    children forked by that one thread (a gunicorn master re-forks workers from whichever
    thread runs its loop). Dying (``Z``) and dead (``X``) processes are left out.
    """
    children = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = _stat_fields(entry)
        except OSError:
            continue  # exited between the listing and the read
        state, parent = fields[0], int(fields[1])
        if parent == pid and state not in ("Z", "X"):
            children.append(int(entry))
    return sorted(children)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used so far, in seconds (0.0 once it is gone)."""
    try:
        fields = _stat_fields(pid)
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Memory:
    """A process's memory in KiB; None for a figure that could not be read (the process is
    gone, a zombie has no memory lines, or PSS was not asked for).

    RSS counts pages shared with the gunicorn master (imports made before the fork) in full in
    every worker; PSS divides them among the processes sharing them, so it is the better
    measure of what one more worker costs.
    """

    rss_kib: int | None = None  # VmRSS: resident now
    peak_kib: int | None = None  # VmHWM: the most it was ever resident
    pss_kib: int | None = None  # Pss: resident, shared pages divided among their sharers


_FIELDS = {"VmRSS": "rss_kib", "VmHWM": "peak_kib", "Pss": "pss_kib"}


def memory(pid: int, *, pss: bool = True) -> Memory:
    """RSS and peak RSS from /proc/<pid>/status and, with ``pss``, PSS from smaps_rollup.

    ``pss=False`` skips smaps_rollup: reading it walks every mapping of the process under its
    memory lock, more than a sampler that wants RSS every few seconds should ask of a worker
    under load.
    """
    found: dict[str, int] = {}
    sources = ["status", "smaps_rollup"] if pss else ["status"]
    for source in sources:
        try:
            with open(f"/proc/{pid}/{source}", encoding="ascii", errors="replace") as handle:
                lines = handle.readlines()
        except OSError:
            continue
        for line in lines:
            name, _, value = line.partition(":")
            if name in _FIELDS:
                found[_FIELDS[name]] = int(value.split()[0])
    return Memory(**found)
