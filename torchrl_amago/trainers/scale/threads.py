"""The learner's torch threads while collector workers on its machine act (docs/scaling.md)."""
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
    """User + system CPU seconds of the processes `pids`, from /proc (Linux); None where it cannot be read."""
    total = 0
    try:
        tick = os.sysconf("SC_CLK_TCK")
        for pid in pids:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()  # after the command name
            total += int(fields[11]) + int(fields[12])  # utime, stime
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
    threads_per_worker)`, at least 1, while `num_workers` workers act in bursts longer than :data:`SHORT_BURST_PHASES`
    checks, else `max_threads`; given their CPU seconds, acting workers take only the cores they used while acting."""

    def __init__(self, max_threads: int, num_workers: int, threads_per_worker: int = 1, cores: int | None = None,
                 clock=time.monotonic):
        if max_threads < 1 or num_workers < 0 or threads_per_worker < 1:
            raise ValueError(f"LearnerThreads needs max_threads >= 1, num_workers >= 0, threads_per_worker >= 1; got "
                             f"{max_threads}, {num_workers}, {threads_per_worker}")
        self.max_threads, self.num_workers = int(max_threads), int(num_workers)
        self.threads_per_worker = int(threads_per_worker)
        self.cores = int(cores or machine_cores())
        self.clock = clock
        self.burst_s = self.phase_s = None  # running means: length of a burst of acting, time between checks
        self._last_check = self._burst_start = self._last_cpu = None  # _last_cpu: the workers' CPU seconds
        self._acting = False  # whether the last check saw a worker acting
        self.acting_wall_s = self.acting_cpu_s = 0.0  # decayed sums over intervals begun with workers acting

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
        return None not in (self.burst_s, self.phase_s) and self.burst_s < SHORT_BURST_PHASES * self.phase_s

    def observe(self, acting_workers: int | None, workers_cpu_s: float | None = None) -> None:
        """Record one check: the time since the last, a burst's start or end, the workers' CPU while acting."""
        now = self.clock()
        if self._last_check is not None:
            self.phase_s = _mean(self.phase_s, now - self._last_check)
            if self._acting and workers_cpu_s is not None and self._last_cpu is not None:
                self.acting_wall_s += now - self._last_check
                self.acting_cpu_s += max(0.0, workers_cpu_s - self._last_cpu)
                if self.acting_wall_s > BUSY_WINDOW_S:  # forget older acting, keep the ratio
                    self.acting_wall_s, self.acting_cpu_s = self.acting_wall_s / 2, self.acting_cpu_s / 2
        self._last_check, self._last_cpu = now, workers_cpu_s
        self._acting = acting = acting_workers is None or acting_workers > 0
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
        """Back to `max_threads`; the next check starts a new interval."""
        self._last_check = self._burst_start = self._last_cpu = None
        self._acting = False
        if torch.get_num_threads() != self.max_threads:
            torch.set_num_threads(self.max_threads)


def _mean(old: float | None, new: float) -> float:
    return new if old is None else (1 - EMA) * old + EMA * new
