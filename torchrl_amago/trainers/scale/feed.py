"""Collector workers beside the learner (``MultiAsyncCollector`` processes or Ray workers), each with its
own envs and acting policy, fed to the learner by a :class:`CollectorFeed` thread."""
from __future__ import annotations

import contextlib
import copy
import math
import queue
import threading
import time
from typing import Callable

import torch
from torchrl.collectors import MultiAsyncCollector
from torchrl.envs import EnvBase

from ..run.guards import guard_env
from .threads import process_cpu_seconds

BATCHES_PER_EPOCH = 4  # default worker batch: a quarter of an epoch of its envs' steps
WORKER_SEED_STRIDE = 104_729  # worker w seeds its envs with seed + stride * (w + 1) (off the eval seed, seed + 10000)
WORKER_THREADS = 1  # torch threads of each collector worker


class CollectionError(RuntimeError):
    """A collector worker died, hung or could not be started."""


def batch_steps(cfg) -> int:
    """Env steps per env in one worker batch: a quarter of an epoch."""
    return max(1, math.ceil(cfg.timesteps_per_epoch / BATCHES_PER_EPOCH))


class WorkerEnvs:
    """Builds a worker's envs in its process: the factory, the NaN/inf guard, the primer, its own seed."""

    def __init__(self, make_env: Callable[[int], EnvBase], num_envs: int, seed: int, primer=None):
        self.make_env, self.num_envs, self.seed, self.primer = make_env, num_envs, seed, primer

    def __call__(self) -> EnvBase:
        env = guard_env(self.make_env(self.num_envs), "training env")
        if self.primer is not None:
            env.append_transform(self.primer.clone())
        env.set_seed(self.seed)
        return env


def check_picklable(obj, what: str) -> None:
    """Raise CollectionError naming `what` and the fix if `obj` cannot be cloudpickled to a worker."""
    import cloudpickle

    try:
        cloudpickle.dumps(obj)
    except Exception as e:  # noqa: BLE001
        raise CollectionError(
            f"{what} cannot be sent to a collector process ({type(e).__name__}: {e}). Build everything the env "
            f"needs inside the factory (open files, locks, simulators, handles), or pass a module-level function "
            f"or functools.partial; or use --collect sync") from e


class AMAGOMultiAsyncCollector(MultiAsyncCollector):
    """TorchRL's ``MultiAsyncCollector`` with a queue slot per worker (no lost steps)."""

    @property
    def _queue_len(self) -> int:
        return self.num_workers

    def parked_batches(self) -> int | None:
        """Finished batches waiting in the workers' output queue; None if unknown."""
        q = getattr(self, "queue_out", None)
        try:
            return q.qsize() if q is not None else None
        except NotImplementedError:  # macOS has no sem_getvalue
            return None


def build_worker_collector(cfg, make_env: Callable[[int], EnvBase], actor, primer=None):
    """The workers' collector (`--collect async`: processes; `distributed`: Ray), each worker with
    `parallel_envs / num_collectors` envs, its own seed and a CPU copy of the acting policy."""
    from torchrl.envs.utils import ExplorationType

    check_picklable(make_env, "the training env factory")
    n, envs_each = cfg.num_collectors, cfg.parallel_envs // cfg.num_collectors
    factories = [WorkerEnvs(make_env, envs_each, cfg.seed + WORKER_SEED_STRIDE * (w + 1), primer) for w in range(n)]
    check_picklable(actor, "the acting policy")
    policy, frames = copy.deepcopy(actor).to("cpu"), envs_each * batch_steps(cfg)
    if cfg.collect == "distributed":
        from .remote_collection import make_remote_collector

        return make_remote_collector(factories, policy, address=cfg.collector_address, frames_per_batch=frames,
                                     batch_timeout_s=cfg.timeout_s)
    return AMAGOMultiAsyncCollector(factories, policy, frames_per_batch=frames, total_frames=-1,
                                    exploration_type=ExplorationType.RANDOM, device="cpu", storing_device="cpu",
                                    num_threads=cfg.num_threads or torch.get_num_threads(),
                                    num_sub_threads=WORKER_THREADS)


def collector_processes(collector) -> list:
    """The worker processes of a TorchRL multi-process collector (empty for remote ones)."""
    return list(getattr(collector, "procs", []) or [])


class Call:
    """`fn` running in a helper thread (:meth:`CollectorFeed.start_call`); its exception is kept for the waiter."""

    def __init__(self, fn: Callable[[], None], what: str):
        self.what, self.errors = what, []

        def run():
            try:
                fn()
            except BaseException as e:  # noqa: BLE001 - re-raised in the waiting thread
                self.errors.append(e)

        self.thread = threading.Thread(target=run, name=f"collector-{what}", daemon=True)
        self.thread.start()


class CollectorFeed:
    """Iterates a collector in a thread into a queue of at most `max_batches` batches; a worker failure or
    no batch for `timeout_s` is a :class:`CollectionError` at the next :meth:`get`."""

    def __init__(self, collector, max_batches: int = 2, timeout_s: float = 120.0):
        self.collector = collector
        self.timeout_s = timeout_s
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, max_batches))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="collector-feed", daemon=True)
        self._holding = False  # the thread holds a batch the full queue has no room for

    def start(self) -> "CollectorFeed":
        """Start iterating the collector (after the first weight push)."""
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            for batch in self.collector:
                self._holding = True
                while not self._stop.is_set():
                    with contextlib.suppress(queue.Full):
                        self._queue.put(batch, timeout=0.2)
                        break
                self._holding = False
                if self._stop.is_set():
                    return
        except BaseException as e:  # noqa: BLE001 - raised in the learner's thread
            if not self._stop.is_set():
                self._queue.put(e)  # a batch is never an exception

    def _check(self, item):
        if isinstance(item, BaseException):
            self._stop.set()
            raise CollectionError(f"a collector worker failed: {type(item).__name__}: {item}. The replay on disk holds "
                                  f"every batch stored before; resume the run to continue") from item
        return item

    def get(self):
        """The next batch; waits at most `timeout_s` (then raises, naming the wait)."""
        deadline = time.monotonic() + self.timeout_s
        while True:
            with contextlib.suppress(queue.Empty):
                return self._check(self._queue.get(timeout=0.5))
            self.check_workers()
            if not self._thread.is_alive() and self._queue.empty() and self._thread.ident is not None:
                raise CollectionError("the collector stopped yielding batches (its thread ended)")
            if time.monotonic() > deadline:
                self._stop.set()
                raise CollectionError(f"no batch from the collector workers in {self.timeout_s:.0f} s "
                                      f"(--timeout_s): a worker is hung or far too slow")

    def acting_workers(self) -> int | None:
        """Collector workers stepping envs now or soon without the learner's doing; None if unknown."""
        running = getattr(self.collector, "running_workers", None)
        if running is not None:
            return running()
        n = getattr(self.collector, "num_workers", None)
        parked = getattr(self.collector, "parked_batches", lambda: None)()
        if n is None or parked is None:
            return None
        if self._thread.ident is None or not self._thread.is_alive():
            return 0  # not started or stopped
        room = self._queue.maxsize - self._queue.qsize() - int(self._holding) + 1  # +1: the batch in its hands
        return n - max(0, parked - room)

    def workers_cpu_s(self) -> float | None:
        """CPU seconds the local worker processes have used so far; None where unknown."""
        pids = [p.pid for p in collector_processes(self.collector) if p.pid is not None]
        return process_cpu_seconds(pids) if pids else None

    def ready(self) -> list:
        """Every batch already waiting (no wait)."""
        out = []
        with contextlib.suppress(queue.Empty):
            while True:
                out.append(self._check(self._queue.get_nowait()))
        return out

    def check_workers(self) -> None:
        """Raise if a worker process is dead."""
        dead = [p for p in collector_processes(self.collector) if not p.is_alive()]
        if dead:
            self._stop.set()
            raise CollectionError("collector worker process died: " + ", ".join(
                f"{p.name} (exit code {p.exitcode})" for p in dead) + ". The replay on disk holds every batch "
                "stored before; resume the run to continue")

    def start_call(self, fn: Callable[[], None], what: str) -> "Call":
        """Run `fn` in a helper thread; :meth:`wait_call` waits for it."""
        return Call(fn, what)

    def wait_call(self, call: "Call") -> None:
        """Wait for a :meth:`start_call` call, checking the workers meanwhile; its error becomes a CollectionError."""
        deadline = time.monotonic() + self.timeout_s
        while call.thread.is_alive():
            call.thread.join(0.5)
            if call.thread.is_alive():
                self.check_workers()
                if time.monotonic() > deadline:
                    self._stop.set()
                    raise CollectionError(f"the collector workers did not finish '{call.what}' in "
                                          f"{self.timeout_s:.0f} s (--timeout_s): a worker is hung")
        if call.errors:
            e = call.errors[0]
            raise CollectionError(f"'{call.what}' failed: {type(e).__name__}: {e}") from e

    def close(self, timeout_s: float = 30.0) -> None:
        """Stop the thread and the collector (batches still queued are dropped: drain them first)."""
        self._stop.set()
        with contextlib.suppress(queue.Empty):
            while True:
                self._queue.get_nowait()
        with contextlib.suppress(Exception):  # a dead worker must not hide the run's error
            self.collector.shutdown()
        if self._thread.ident is not None:  # started
            self._thread.join(timeout=timeout_s)


def sync_exploration_step(exploration, env_steps: int, parallel_envs: int) -> None:
    """Set the exploration schedule's step to the run's batched-step count (before each weight push)."""
    step = getattr(exploration, "global_step", None)
    if isinstance(step, torch.Tensor):
        step.fill_(env_steps // max(1, parallel_envs))
