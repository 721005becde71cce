"""Collector workers beside the learner: TorchRL's multi-process (or Ray) collectors, fed to the learner by a thread.

``--collect async`` runs ``--num_collectors`` worker processes through TorchRL's
:class:`~torchrl.collectors.MultiAsyncCollector`; each worker holds its own envs and its own copy of the acting policy
(with its own KV cache / RNN state, cleared at ``is_init``). ``--collect distributed`` does the same with workers on
other machines (:func:`torchrl_amago.trainers.scale.remote_collection.make_remote_collector`).

A :class:`CollectorFeed` thread iterates the collector and keeps up to ``max_batches`` finished batches in a queue,
so the workers keep stepping while the learner updates or evaluates. Only the learner's thread touches the replay
(it takes batches from the feed). Weights reach the workers through TorchRL's weight-update API
(``collector.update_policy_weights_()``), every ``--policy_sync_interval`` updates (``collection.AsyncCollection``).
"""
from __future__ import annotations

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
    """Env steps per env in one worker batch (``--collector_batch_steps``, default a quarter of an epoch)."""
    return max(1, math.ceil(cfg.timesteps_per_epoch / BATCHES_PER_EPOCH))


class WorkerEnvs:
    """Builds one collector worker's envs inside its process: the user's factory, the NaN/inf guard, the acting
    memory's primer (TorchRL RNNs), and the worker's own seed. Pickled to the worker (TorchRL cloudpickles it)."""

    def __init__(self, make_env: Callable[[int], EnvBase], num_envs: int, seed: int, primer=None):
        self.make_env, self.num_envs, self.seed, self.primer = make_env, num_envs, seed, primer

    def __call__(self) -> EnvBase:
        env = guard_env(self.make_env(self.num_envs), "training env")
        if self.primer is not None:
            env.append_transform(self.primer.clone())  # guard_env returns a TransformedEnv
        env.set_seed(self.seed)
        return env


def check_picklable(obj, what: str) -> None:
    """A worker process gets `obj` by (cloud)pickle: fail here, naming it and the fix, not inside a worker."""
    import cloudpickle

    try:
        cloudpickle.dumps(obj)
    except Exception as e:  # any pickling failure: lock, open file, generator, C object...
        raise CollectionError(
            f"{what} cannot be sent to a collector process ({type(e).__name__}: {e}). Build everything the env "
            f"needs inside the factory (open files, locks, simulators, handles), or pass a module-level function "
            f"or functools.partial; or use --collect sync") from e


def local_collector_workers(cfg) -> int:
    """Collector workers that run on the learner's machine (and share its cores): all of them with `--collect
    async` and with `--collect distributed` on a local Ray instance (no `--collector_address`), else none."""
    if cfg.collect == "async" or (cfg.collect == "distributed" and cfg.collector_address is None):
        return cfg.num_collectors
    return 0


def worker_env_factories(cfg, make_env: Callable[[int], EnvBase], seed: int, primer=None) -> list[WorkerEnvs]:
    """One factory per collector worker, each for `parallel_envs / num_collectors` envs with its own seed."""
    check_picklable(make_env, "the training env factory")
    envs_each = cfg.parallel_envs // cfg.num_collectors
    return [WorkerEnvs(make_env, envs_each, seed + WORKER_SEED_STRIDE * (w + 1), primer)
            for w in range(cfg.num_collectors)]


class AMAGOMultiAsyncCollector(MultiAsyncCollector):
    """TorchRL's :class:`~torchrl.collectors.MultiAsyncCollector` with room for one finished batch per worker, and
    a count of the workers whose finished batch waits to be taken (:meth:`parked_batches`).

    TorchRL 0.14's has one slot: a worker that cannot hand its batch in within 1 s collects its next batch over it,
    and the stored trials miss those steps. With a slot per worker a finished worker waits until its batch is taken
    (then starts the next at once): nothing is collected twice or lost."""

    @property
    def _queue_len(self) -> int:
        return self.num_workers

    def parked_batches(self) -> int | None:
        """Finished batches waiting in the workers' output queue (each one's worker is idle); None if unknown."""
        q = getattr(self, "queue_out", None)
        try:
            return q.qsize() if q is not None else None
        except NotImplementedError:  # macOS has no sem_getvalue
            return None


def build_multiprocess_collector(cfg, make_env: Callable[[int], EnvBase], actor, *, seed: int, primer=None,
                                 learner_threads: int | None = None):
    """:class:`AMAGOMultiAsyncCollector` (TorchRL's MultiAsyncCollector) over `--num_collectors` workers of
    `parallel_envs / num_collectors` envs, each with 1 torch thread."""
    from torchrl.envs.utils import ExplorationType

    n = cfg.num_collectors
    envs_each = cfg.parallel_envs // n
    factories = worker_env_factories(cfg, make_env, seed, primer)
    # the learner's own threads: LearnerThreads lowers them while workers act (one core per acting worker)
    threads = learner_threads or torch.get_num_threads()
    return AMAGOMultiAsyncCollector(factories, acting_copy(actor), frames_per_batch=envs_each * batch_steps(cfg),
                                    total_frames=-1, exploration_type=ExplorationType.RANDOM, device="cpu",
                                    storing_device="cpu", num_threads=threads, num_sub_threads=WORKER_THREADS)


def build_remote_collector(cfg, make_env: Callable[[int], EnvBase], actor, *, seed: int, primer=None):
    """`--collect distributed`: TorchRL's RayCollector with `--num_collectors` remote workers on the Ray cluster at
    `--collector_address` (a local Ray instance when unset); see `remote_collection.py` and docs/scaling.md."""
    from .remote_collection import make_remote_collector  # imports ray and torchrl.collectors.distributed

    factories = worker_env_factories(cfg, make_env, seed, primer)
    return make_remote_collector(factories, acting_copy(actor), address=cfg.collector_address,
                                 frames_per_batch=(cfg.parallel_envs // cfg.num_collectors) * batch_steps(cfg),
                                 batch_timeout_s=cfg.timeout_s)


def acting_copy(actor):
    """The collector's own copy of the acting policy (on CPU).

    TorchRL puts the collector policy's weights in shared memory that its workers read. Handing it the learner's
    own modules would let every optimizer step reach the workers mid-forward; a copy gets the learner's weights
    only when they are pushed (`update_policy_weights_`), every `--policy_sync_interval` updates."""
    check_picklable(actor, "the acting policy")
    return copy.deepcopy(actor).to("cpu")


def collector_processes(collector) -> list:
    """The worker processes of a TorchRL multi-process collector (empty for remote ones)."""
    return list(getattr(collector, "procs", []) or [])


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error


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
    """Iterates a TorchRL collector in a background thread; finished batches wait in a bounded queue.

    The workers therefore keep collecting while the learner updates or evaluates; when the queue is full the
    thread stops asking, and each worker stops after its next batch (TorchRL's async collectors run at most one
    batch ahead). A worker failure (TorchRL checks its processes every second while it waits) reaches the learner
    as a :class:`CollectionError` at its next :meth:`get`; no batch for `timeout_s` is an error too.
    """

    def __init__(self, collector, max_batches: int = 2, timeout_s: float = 120.0):
        self.collector = collector
        self.timeout_s = timeout_s
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, max_batches))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="collector-feed", daemon=True)
        self._holding = False  # the thread holds a batch it could not queue yet (the queue is full)

    def start(self) -> "CollectorFeed":
        """Start iterating the collector (after the first weight push, e.g. of resumed weights)."""
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            for batch in self.collector:
                self._holding = True
                while not self._stop.is_set():
                    try:
                        self._queue.put(batch, timeout=0.2)
                        break
                    except queue.Full:
                        continue
                self._holding = False
                if self._stop.is_set():
                    return
        except BaseException as e:  # noqa: BLE001 - handed to the learner's thread
            if not self._stop.is_set():
                self._queue.put(_Failure(e))

    def _check(self, item):
        if isinstance(item, _Failure):
            self._stop.set()
            raise CollectionError(f"a collector worker failed: {type(item.error).__name__}: {item.error}. The replay "
                                  f"on disk holds every batch stored before; resume the run to continue") from item.error
        return item

    def get(self):
        """The next batch; waits at most `timeout_s` (then raises, naming the wait)."""
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                return self._check(self._queue.get(timeout=0.5))
            except queue.Empty:
                pass
            self.check_workers()
            if not self._thread.is_alive() and self._queue.empty() and self._thread.ident is not None:
                raise CollectionError("the collector stopped yielding batches (its thread ended)")
            if time.monotonic() > deadline:
                self._stop.set()
                raise CollectionError(f"no batch from the collector workers in {self.timeout_s:.0f} s "
                                      f"(--collector_timeout_s): a worker is hung or far too slow")

    def acting_workers(self) -> int | None:
        """How many collector workers are stepping envs now or will be without the learner's doing; None if the
        collector cannot tell (then assume all of them).

        Ray's collector says it itself (`running_workers`: a worker starts its next batch when asked for it). In
        TorchRL's multi-process collector a worker is idle only while its finished batch waits in the output queue
        (:meth:`AMAGOMultiAsyncCollector.parked_batches`). This thread takes such batches as long as its own queue
        has room, and every batch it takes sets that batch's worker going again: those workers count as acting."""
        running = getattr(self.collector, "running_workers", None)
        if running is not None:
            return running()
        n = getattr(self.collector, "num_workers", None)
        parked = getattr(self.collector, "parked_batches", lambda: None)()
        if n is None or parked is None:
            return None
        if self._thread.ident is None or not self._thread.is_alive():
            return 0  # not started (no worker has been asked for a batch) or stopped
        room = self._queue.maxsize - self._queue.qsize() - int(self._holding) + 1  # +1: the batch in its hands
        return n - max(0, parked - room)

    def workers_cpu_s(self) -> float | None:
        """CPU seconds the collector's worker processes on this machine have used so far; None where they cannot be
        read (remote workers, another OS than Linux)."""
        pids = [p.pid for p in collector_processes(self.collector) if p.pid is not None]
        return process_cpu_seconds(pids) if pids else None

    def ready(self) -> list:
        """Every batch already waiting (no wait)."""
        out = []
        while True:
            try:
                out.append(self._check(self._queue.get_nowait()))
            except queue.Empty:
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
        """Run `fn` in a helper thread and return at once; :meth:`wait_call` collects it (and its error, if any)."""
        return Call(fn, what)

    def wait_call(self, call: "Call") -> None:
        """Wait for a :meth:`start_call`-ed call, checking the workers meanwhile; raise its error as a CollectionError."""
        deadline = time.monotonic() + self.timeout_s
        while call.thread.is_alive():
            call.thread.join(0.5)
            if call.thread.is_alive():
                self.check_workers()
                if time.monotonic() > deadline:
                    self._stop.set()
                    raise CollectionError(f"the collector workers did not finish '{call.what}' in "
                                          f"{self.timeout_s:.0f} s (--collector_timeout_s): a worker is hung")
        if call.errors:
            e = call.errors[0]
            raise CollectionError(f"'{call.what}' failed: {type(e).__name__}: {e}") from e

    def close(self, timeout_s: float = 30.0) -> None:
        """Stop the thread and the collector (batches still queued are dropped: drain them first)."""
        self._stop.set()
        try:
            while True:
                self._queue.get_nowait()
        except queue.Empty:
            pass
        try:
            self.collector.shutdown()
        except Exception:  # noqa: BLE001 - a dead worker must not hide the error that stopped the run
            pass
        if self._thread.ident is not None:  # started
            self._thread.join(timeout=timeout_s)


def sync_exploration_step(exploration, env_steps: int, parallel_envs: int) -> None:
    """Workers anneal epsilon on their own counters; before each weight push, set the schedule's step to the run's
    batched-step count (what a sync run would have reached), so every worker follows the run's schedule."""
    step = getattr(exploration, "global_step", None)
    if isinstance(step, torch.Tensor):
        step.fill_(env_steps // max(1, parallel_envs))
