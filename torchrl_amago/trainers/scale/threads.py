"""The learner's torch threads while collector workers on the same machine act beside it.

A learner whose intra-op threads share cores with acting workers is slowed far more than by the lost cores: every
parallel op waits for its slowest thread. So while workers act the learner takes only the cores they leave free, and
all of them again when the workers wait for it (2 cores, 20 ms of CPU per env step, `benchmarks/async_collect.py`:
3.77 s per epoch, against 4.07 s keeping both threads and 4.28 s for the sync loop). The learner checks the workers
only between phases of an update (forward, backward, optimizer step), so bursts of acting shorter than a few phases
are shared instead (plain T-Maze: 3.15 s per epoch, against 3.20 s handing a core back at every burst). Where the
workers' CPU time can be read (Linux), they get only the cores they used while acting, so workers whose envs wait (a
simulator elsewhere, a robot) leave the learner its cores (docs/scaling.md).
"""
from __future__ import annotations

import math
import os
import time

import torch

SHORT_BURST_PHASES = 3.0  # bursts of acting shorter than this many learner phases are shared, not given a core
EMA = 0.2  # weight of the newest burst / phase in the running means
BUSY_WINDOW_S = 2.0  # the workers' CPU use while acting is measured over about this many seconds of acting
IDLE_SLACK = 0.3  # cores the workers used, less this, rounded up, is what they are given (0.3 used: no core)


def process_cpu_seconds(pids) -> float | None:
    """User + system CPU seconds of the processes `pids` so far, from /proc (Linux); None where it cannot be read
    (another OS, or a process that has ended)."""
    total = 0
    try:
        tick = os.sysconf("SC_CLK_TCK")
        for pid in pids:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()  # after the command name, which may hold spaces
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    except (OSError, ValueError, IndexError, AttributeError):
        return None
    return total / tick


def machine_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class LearnerThreads:
    """Sets `torch.set_num_threads` at each check (:meth:`apply`): `min(max_threads, cores - acting workers x
    threads_per_worker)`, at least 1, while workers act in long bursts; `max_threads` otherwise.

    A burst is a stretch of checks that see at least one worker acting; its length and the time between checks are
    running means. A burst that lasts fewer than :data:`SHORT_BURST_PHASES` check intervals is shared (the learner
    keeps `max_threads`). Until a first burst has been seen, bursts count as long.

    Where a check also gives the workers' CPU seconds so far, the cores they take while acting are the cores they
    used while acting over the last :data:`BUSY_WINDOW_S` seconds of acting (less :data:`IDLE_SLACK`, rounded up),
    at most one per acting worker: workers that wait on their envs leave the learner its cores.

    Args:
        max_threads: the learner's threads when no worker acts (`--num_threads`, default torch's).
        num_workers: collector workers on this machine (all of them are assumed to act when the count is unknown).
        threads_per_worker: torch threads of each worker (the collectors use 1).
        cores: the machine's cores (default: :func:`machine_cores`).
        clock: seconds, monotonic (tests pass a fake one).
    """

    def __init__(self, max_threads: int, num_workers: int, threads_per_worker: int = 1, cores: int | None = None,
                 clock=time.monotonic):
        if max_threads < 1 or num_workers < 0 or threads_per_worker < 1:
            raise ValueError(f"LearnerThreads needs max_threads >= 1, num_workers >= 0, threads_per_worker >= 1; got "
                             f"{max_threads}, {num_workers}, {threads_per_worker}")
        self.max_threads, self.num_workers = int(max_threads), int(num_workers)
        self.threads_per_worker = int(threads_per_worker)
        self.cores = int(cores or machine_cores())
        self.clock = clock
        self.burst_s: float | None = None  # running mean length of a burst of acting
        self.phase_s: float | None = None  # running mean time between checks
        self._last_check: float | None = None
        self._burst_start: float | None = None
        self._acting = False  # whether the last check saw a worker acting
        self._last_cpu: float | None = None  # the workers' CPU seconds at the last check
        self.acting_wall_s = self.acting_cpu_s = 0.0  # decayed sums over intervals that began with workers acting

    def busy_cores(self) -> float | None:
        """Cores the workers used while acting, over the last seconds of acting; None until measured."""
        return self.acting_cpu_s / self.acting_wall_s if self.acting_wall_s > 0 else None

    def threads_for(self, acting_workers: int | None) -> int:
        """Threads for the learner while `acting_workers` workers act (None: all of them), bursts aside."""
        acting = self.num_workers if acting_workers is None else min(max(acting_workers, 0), self.num_workers)
        taken = acting * self.threads_per_worker
        busy = self.busy_cores()
        if busy is not None and acting > 0:
            taken = min(taken, max(0, math.ceil(busy - IDLE_SLACK)))
        return max(1, min(self.max_threads, self.cores - taken))

    def short_bursts(self) -> bool:
        """Whether the workers' bursts of acting are too short to be worth a core."""
        if self.burst_s is None or self.phase_s is None:
            return False
        return self.burst_s < SHORT_BURST_PHASES * self.phase_s

    def observe(self, acting_workers: int | None, workers_cpu_s: float | None = None) -> None:
        """Record one check: the time since the last, whether a burst of acting starts or ends, and (given the
        workers' CPU seconds so far) the CPU they used over an interval that began with them acting."""
        now = self.clock()
        if self._last_check is not None:
            self.phase_s = _mean(self.phase_s, now - self._last_check)
            if self._acting and workers_cpu_s is not None and self._last_cpu is not None:
                self.acting_wall_s += now - self._last_check
                self.acting_cpu_s += max(0.0, workers_cpu_s - self._last_cpu)
                if self.acting_wall_s > BUSY_WINDOW_S:  # forget older acting, keep the ratio
                    self.acting_wall_s, self.acting_cpu_s = self.acting_wall_s / 2, self.acting_cpu_s / 2
        self._last_check, self._last_cpu = now, workers_cpu_s
        acting = acting_workers is None or acting_workers > 0
        self._acting = acting
        if acting and self._burst_start is None:
            self._burst_start = now
        elif not acting and self._burst_start is not None:
            self.burst_s = _mean(self.burst_s, now - self._burst_start)
            self._burst_start = None

    def apply(self, acting_workers: int | None, workers_cpu_s: float | None = None) -> int:
        """Record a check and set this thread's torch threads for what follows; returns the number set."""
        self.observe(acting_workers, workers_cpu_s)
        n = self.max_threads if self.short_bursts() else self.threads_for(acting_workers)
        if torch.get_num_threads() != n:
            torch.set_num_threads(n)
        return n

    def restore(self) -> None:
        """Back to `max_threads` (e.g. when the workers stop); the next check starts a new interval."""
        self._last_check = self._burst_start = self._last_cpu = None
        self._acting = False
        if torch.get_num_threads() != self.max_threads:
            torch.set_num_threads(self.max_threads)


def _mean(old: float | None, new: float) -> float:
    return new if old is None else (1 - EMA) * old + EMA * new
