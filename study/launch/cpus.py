"""How many CPUs this process may really use, and the process settings a run starts with.

``available_cpus`` is the smallest of: the CPUs this process may be scheduled on
(affinity: ``taskset``, a container's cpuset), the cgroup's CPU quota (a container
or a SLURM job with ``cpu.max``), and SLURM's own allocation (``SLURM_CPUS_PER_TASK``).
``os.cpu_count()`` counts the machine, which on a shared node is the wrong answer.

A run's thread count is a function of its allocation and its input size only,
never of the machine's load: PyTorch's CPU reductions may round differently on
another number of threads, so a count taken from the load of the moment would
store different numbers under one run id. Small inputs (the smoke profile's
64x64) train one thread each; larger ones take the allocation's CPUs shared by
the runs that train at once. The load (``busy_cpus``, sampled from /proc/stat)
only lowers how many runs train at once, and a busy machine is said: torch
threads that wait at every operation for a thread descheduled by someone else's
process made a training step 15-30x slower on a busy 2-core machine.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

from study.errors import ConfigError

CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def _affinity() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _cgroup_quota(path: Path = CGROUP_CPU_MAX) -> int | None:
    """CPUs granted by a cgroup v2 quota (``cpu.max`` is "quota period" or "max period")."""
    try:
        quota, period = path.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    try:
        return max(1, math.ceil(int(quota) / int(period)))
    except (ValueError, ZeroDivisionError):
        return None


def _slurm_cpus(environ=os.environ) -> int | None:
    from study.launch.slurm.environment import JobEnvironment

    return JobEnvironment.read(environ).cpus or None


def available_cpus(environ=os.environ, cgroup: Path = CGROUP_CPU_MAX) -> int:
    limits = [_affinity(), _cgroup_quota(cgroup), _slurm_cpus(environ)]
    return max(1, min(n for n in limits if n))


def _cpu_jiffies(stat: Path = Path("/proc/stat")) -> tuple[int, int] | None:
    """(busy, total) clock ticks of all CPUs since boot, from the first line of /proc/stat."""
    try:
        fields = [int(v) for v in stat.read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields[:8]) - idle, sum(fields[:8])


def busy_cpus(window_s: float = 0.3) -> int:
    """Cores other programs keep busy now, rounded down after a quarter core of slack.

    Sampled over ``window_s`` from /proc/stat, less this process's own time: the
    load average lags by minutes, so a run started just after other work ended
    would take too few threads for its whole life. Elsewhere, the load average.
    """
    before, own_before = _cpu_jiffies(), sum(os.times()[:2])
    if before is None:
        try:
            return int(os.getloadavg()[0] + 0.25)
        except (AttributeError, OSError):
            return 0
    start = time.monotonic()
    time.sleep(window_s)
    after, own_after = _cpu_jiffies(), sum(os.times()[:2])
    elapsed = time.monotonic() - start
    if after is None or elapsed <= 0:
        return 0
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    others = (after[0] - before[0]) / ticks - (own_after - own_before)
    return max(0, int(others / elapsed + 0.25))


def default_threads(runs_at_once: int = 1, cpus: int | None = None) -> int:
    """Torch threads per run: the allocation's CPUs shared by the runs, at least one (never the load)."""
    cpus = available_cpus() if cpus is None else cpus
    return max(1, cpus // max(1, runs_at_once))


# Runs at this input size or smaller (the 64x64 smoke profile) gain ~10% from a second
# thread (0.80 -> 0.73 s per smoke epoch here), much less than a second run at once gains
# (see above on sharing cores), so they train one thread each, several at once.
SMALL_INPUT = 64


@dataclass(frozen=True)
class CpuShare:
    """How a launch divides the CPUs, decided once: ``jobs`` runs (or search workers) at once,
    ``threads`` torch threads each. What ``--dry-run`` prints is what the launch uses."""

    jobs: int
    threads: int
    cpus: int
    busy: int
    chosen: str = "the allocation"  # where the thread count came from

    def describe(self) -> str:
        busy = (f", {self.busy} busy with other work: fewer runs at once, the same threads per run; timings "
                "will be slower") if self.busy else ""
        return (f"{self.jobs} run(s) at once x {self.threads} thread(s) from {self.chosen} "
                f"({self.cpus} CPU(s) available to this process{busy})")


def local_share(input_sizes: list[int], jobs: int | None = None, threads: int | None = None,
                cpus: int | None = None, busy: int | None = None) -> CpuShare:
    """Jobs and threads for runs of these input sizes; explicit ``jobs``/``threads`` win.
    With no sizes (``train``, ``bench``, the search's workers) a run counts as large. The threads
    depend on the allocation and the sizes only; the busy CPUs lower the jobs."""
    from study.settings import current

    if threads is not None and threads < 1:
        raise ConfigError(f"--threads {threads}: expected at least 1")
    if jobs is not None and jobs < 1:
        raise ConfigError(f"--jobs {jobs}: expected at least 1")
    chosen = "--threads" if threads is not None else "the allocation"
    if threads is None and current().threads is not None:
        threads, chosen = current().threads, "STUDY_THREADS"
    cpus = available_cpus() if cpus is None else cpus
    busy = busy_cpus() if busy is None else busy
    free = max(1, cpus - busy)
    small = bool(input_sizes) and max(input_sizes) <= SMALL_INPUT
    runs = max(1, len(input_sizes))
    if jobs is None and threads is None:
        jobs, threads = (min(runs, free), 1) if small else (1, cpus)
    elif threads is None:
        threads = 1 if small else default_threads(jobs, cpus)
    elif jobs is None:
        jobs = max(1, min(runs, free // threads)) if small else 1
    return CpuShare(max(1, jobs), max(1, threads), cpus, busy, chosen)


def configure_process(threads: int) -> None:
    """A training process's settings: its torch threads and the allocator."""
    import torch

    tune_allocator()
    torch.set_num_threads(max(1, threads))
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # only settable before the first parallel op of a process
        pass


def tune_allocator() -> None:
    """Keep freed activation buffers in the heap instead of returning them to the kernel.

    glibc hands blocks over its mmap threshold back at every free, so each training
    step faults in the same hundreds of MB again; a high threshold made a step
    about 20% faster here. Only glibc has ``mallopt``; elsewhere nothing changes.
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        if not libc.mallopt(-3, 1 << 30):  # M_MMAP_THRESHOLD: 1 GiB, or glibc's own maximum
            libc.mallopt(-3, 32 << 20)
        libc.mallopt(-1, 1 << 31)  # M_TRIM_THRESHOLD: 2 GiB
    except (OSError, AttributeError):
        pass
