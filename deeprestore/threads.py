"""How many torch (OpenMP) threads a run takes: ``--threads N`` or ``auto``.

torch takes one thread per core. On a machine that is busy with other work its threads wait on
each other at every parallel op (measured: the 64 px demo beside three busy single-thread
processes on a 2-core CPU ran about 30× slower than alone). ``auto`` takes no more threads than
there are idle cores when the run starts, measured from ``/proc/stat`` over a quarter second
(docs/performance.md, "A busy machine"). An ``OMP_NUM_THREADS`` set by the user is respected.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

#: The value of ``--threads`` that picks the count from the idle cores.
AUTO_THREADS = "auto"
#: How long the CPU is watched to count idle cores (seconds).
SAMPLE_SECONDS = 0.25


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity; ``os.cpu_count()`` elsewhere)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _cpu_times(stat: Path) -> tuple[float, float] | None:
    """(busy, total) jiffies of all CPUs from ``/proc/stat``'s first line, None if unreadable."""
    try:
        fields = stat.read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    if not fields or fields[0] != "cpu":
        return None
    values = [float(v) for v in fields[1:9]]  # user nice system idle iowait irq softirq steal
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def busy_cores(seconds: float = SAMPLE_SECONDS, stat: Path = Path("/proc/stat")) -> float | None:
    """How many cores' worth of work the machine did over the next ``seconds`` (this process
    sleeps meanwhile); None where ``/proc/stat`` is missing."""
    first = _cpu_times(stat)
    time.sleep(seconds)
    second = _cpu_times(stat)
    if first is None or second is None or second[1] <= first[1]:
        return None
    share = (second[0] - first[0]) / (second[1] - first[1])
    return share * (os.cpu_count() or 1)


def auto_thread_count(cores: int, busy: float | None) -> int:
    """Threads for ``cores`` usable cores when ``busy`` cores are taken by others: the idle
    ones (a core less than 70 % busy counts as idle), at least 1."""
    if busy is None:
        return cores
    return max(1, min(cores, cores - int(busy + 0.3)))


def choose_thread_count(requested: str | int | None) -> tuple[int | None, str]:
    """The torch thread count for ``--threads`` (an int, ``auto`` or None = auto) and why.

    Returns (count, reason); count None means "leave torch's own count" (the user's
    ``OMP_NUM_THREADS``, or an idle machine).
    """
    if requested not in (None, AUTO_THREADS):
        count = int(requested)
        if count < 1:
            raise ValueError(f"--threads must be ≥ 1 or {AUTO_THREADS}, got {count}")
        return count, "asked for"
    if os.environ.get("OMP_NUM_THREADS"):
        return None, "OMP_NUM_THREADS"
    cores = usable_cores()
    busy = busy_cores()
    count = auto_thread_count(cores, busy)
    if count >= cores:
        return None, "idle machine"
    return count, f"{busy:.1f} of {cores} cores busy with other work"
