"""Collection on many nodes: TorchRL's `RayCollector` with unique trajectory ids, errors in bounded time
that name the worker, and checks before any worker starts. Needs `ray` (`pip install torchrl_amago[ray]`)."""
from __future__ import annotations

import os
import socket
import time
from typing import Any, Callable, Sequence

import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.collectors import Collector
from torchrl.collectors.distributed import RayCollector
from torchrl.envs import EnvBase, ExplorationType

from ..._optional import require

TRAJ_IDS_KEY = ("collector", "traj_ids")
RAY_EXTRA = "torchrl_amago[ray]"


class RemoteCollectorError(RuntimeError):
    """A remote collector worker died, raised, stopped answering, or could not be started."""


class GlobalTrajIds:
    """Postproc of worker `worker_index`: trajectory id `i -> i * num_workers + worker_index` (negatives kept)."""

    def __init__(self, worker_index: int, num_workers: int):
        if not 0 <= worker_index < num_workers:
            raise ValueError(f"worker_index must be in [0, {num_workers}), got {worker_index}")
        self.worker_index, self.num_workers = int(worker_index), int(num_workers)

    def __call__(self, td: TensorDictBase) -> TensorDictBase:
        ids = td.get(TRAJ_IDS_KEY, None)
        if ids is None:
            raise KeyError(f"GlobalTrajIds: the collector's batch has no {TRAJ_IDS_KEY!r} (track_traj_ids=False?)")
        td = td.clone(False)  # the worker's own rollout buffer keeps its raw ids
        td.set(TRAJ_IDS_KEY, torch.where(ids >= 0, ids * self.num_workers + self.worker_index, ids))
        return td


class WorkerCollector(Collector):
    """The `Collector` inside each Ray actor, with queries for error messages and tests."""

    def __repr__(self) -> str:  # Ray prefixes the actor's log lines with it
        return f"{type(self).__name__}(worker={self.worker_idx})"

    def print_remote_collector_info(self) -> None:
        """Prints nothing (TorchRL's prints the whole collector at start)."""

    def set_seed(self, seed: int, static_seed: bool = False) -> int:
        """TorchRL's env seeding, this process's torch RNG, then a reset of every env."""
        out = super().set_seed(seed, static_seed=static_seed)
        torch.manual_seed(seed)
        self.reset()
        return out

    def worker_info(self) -> dict:
        """Node address, Ray node id, host name and process id of this worker."""
        import ray

        return {"node": ray.util.get_node_ip_address(), "node_id": ray.get_runtime_context().get_node_id(),
                "host": socket.gethostname(), "pid": os.getpid()}

    def policy_weights(self) -> TensorDictBase:
        """The acting policy's current parameters and buffers (a copy)."""
        return TensorDict.from_module(self.policy).data.clone()


class AMAGORayCollector(RayCollector):
    """`RayCollector`, asynchronous, whose worker not ready `batch_timeout_s` after a request is an error."""

    def __init__(self, *args, batch_timeout_s: float | None = 600.0, address: str | None = None, **kwargs):
        self._batch_timeout_s = batch_timeout_s
        self._address = address
        self._workers_info: list[dict] = []
        super().__init__(*args, **kwargs)
        import ray

        self._worker_handles = list(self.remote_collectors)  # shutdown() empties remote_collectors
        self._workers_info = self._guarded(lambda: ray.get([w.worker_info.remote() for w in self._worker_handles]),
                                           "report where it runs")

    def _where(self, i: int) -> str:
        info = self._workers_info[i] if i < len(self._workers_info) else None
        where = f" on node {info['node']} ({info['host']}, pid {info['pid']})" if info else ""
        return f"remote collector worker {i} of {self.num_collectors}{where}"

    def _dead_workers(self, timeout_s: float = 10.0) -> list[int]:
        import ray

        refs = [w.__ray_ready__.remote() for w in self._worker_handles]
        dead = []
        for i, ref in enumerate(refs):
            try:
                ray.get(ref, timeout=timeout_s)
            except Exception:
                dead.append(i)
        return dead

    def _fail(self, message: str, cause: BaseException | None = None):
        where = f"the Ray cluster at {self._address}" if self._address else "the local Ray instance"
        self.shutdown()
        raise RemoteCollectorError(
            f"{message}. The other workers were stopped; collected batches already handed out are unaffected. "
            f"Check the worker's node ({where}: `ray status`, worker logs under /tmp/ray/session_latest/logs) "
            f"and restart the run, which resumes from its last checkpoint.") from cause

    def _failed_worker(self, i: int, err: BaseException, doing: str):
        import ray

        if isinstance(err, ray.exceptions.RayTaskError):
            cause = err.cause if isinstance(getattr(err, "cause", None), BaseException) else err
            self._fail(f"{self._where(i)} raised {type(cause).__name__} while it {doing}: {cause}", err)
        self._fail(f"{self._where(i)} died or became unreachable while it {doing} ({type(err).__name__})", err)

    def _guarded(self, call: Callable[[], Any], doing: str):
        """Run `call`; a Ray failure becomes a RemoteCollectorError naming the first dead worker."""
        import ray

        try:
            return call()
        except (ray.exceptions.RayError, RuntimeError) as err:
            dead = self._dead_workers()
            if not dead:
                raise
            self._failed_worker(dead[0], err, doing)

    def _async_iterator(self):
        """First ready, first served, one pending request per worker, each with a deadline."""
        import ray

        pending: dict = {}  # object ref -> (worker index, time requested)
        self._pending = pending  # read by parked_batches() from another thread

        def request(i: int):
            pending[self.remote_collectors[i].next.remote()] = (i, time.monotonic())

        for i in range(len(self.remote_collectors)):
            request(i)
        while self.collected_frames < self.total_frames and not self._stop_event.is_set():
            wait_s = None
            if self._batch_timeout_s is not None:
                oldest = min(t for _, t in pending.values())
                wait_s = max(0.0, oldest + self._batch_timeout_s - time.monotonic())
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=wait_s)
            if not ready:
                late = min(pending.values(), key=lambda it: it[1])[0]
                self._fail(f"{self._where(late)} sent no batch for {self._batch_timeout_s:g} s "
                           f"(batch_timeout_s); it is alive but stuck, or far slower than expected")
            ref = ready[0]
            i, _ = pending.pop(ref)
            try:
                data = ray.get(ref)
            except ray.exceptions.RayError as err:
                self._failed_worker(i, err, "collected a batch")
            self.collected_frames += data.numel() if data is not None else self.frames_per_batch
            yield data
            if self._stop_event.is_set():
                break
            request(i)
        if self._collection_thread is None:
            self.shutdown()

    @property
    def num_workers(self) -> int:
        """Remote collector workers (as `MultiAsyncCollector.num_workers`)."""
        return self.num_collectors

    def running_workers(self) -> int | None:
        """Workers with a requested batch that is not finished; None before iteration starts or if unknown."""
        import ray

        pending = getattr(self, "_pending", None)
        if pending is None:
            return None
        try:
            refs = list(pending)  # the iterator's thread may change it
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0, fetch_local=False) if refs else ([], [])
        except Exception:  # noqa: BLE001 - the iterator reports a dead worker
            return None
        return len(refs) - len(ready)

    def update_policy_weights_(self, *args, **kwargs) -> None:
        """TorchRL's push of the policy's parameters and buffers to every worker; a dead one is named."""
        return self._guarded(lambda: super(AMAGORayCollector, self).update_policy_weights_(*args, **kwargs),
                             "received new policy weights")

    def worker_info(self) -> list[dict]:
        """Node, host and pid of every worker, in worker order."""
        return list(self._workers_info)

    def remote_policy_weights(self) -> list[TensorDictBase]:
        """Every worker's current acting weights (parameters and buffers), in worker order."""
        import ray

        return self._guarded(lambda: ray.get([w.policy_weights.remote() for w in self._worker_handles]),
                             "reported its policy weights")

    def shutdown(self, timeout: float | None = None, shutdown_ray: bool = False) -> None:
        if getattr(self, "_shut", False):
            return
        self._shut = True
        super().shutdown(timeout=timeout, shutdown_ray=shutdown_ray)


def _connect(address: str | None, ray_init_config: dict | None, need_cpus: float):
    """Join the cluster at `address` (or a local instance) with `need_cpus` free CPUs; TorchRL's runtime lease."""
    import ray
    from torchrl._comm.ray_runtime import _RayRuntimeLease

    cfg = dict(ray_init_config or {})
    if address is not None:
        host, _, port = address.split("://", 1)[-1].rpartition(":")
        if address != "auto" and (not host or not port.isdigit()):
            raise ValueError(f"address {address!r} (--collector_address) must be <head-ip>:<port> as printed by "
                             f"`ray start --head`, or 'auto'")
        try:
            if address != "auto":
                socket.create_connection((host, int(port)), timeout=10.0).close()
        except OSError as e:
            raise RemoteCollectorError(
                f"cannot reach the Ray head at {address} (--collector_address): {e}. Start it with "
                f"`ray start --head --port={port}` on that node and check that this machine can reach the port") from e
        cfg["address"] = address
    else:  # a private local instance ("local": never one `ray start` left) with a CPU for every worker
        cfg.setdefault("address", "local")
        cfg.setdefault("num_cpus", max(os.cpu_count() or 1, int(need_cpus + 0.999)))
        cfg.setdefault("include_dashboard", False)
    try:
        lease = _RayRuntimeLease.acquire(cfg)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise RemoteCollectorError(
            f"cannot join the Ray cluster at address {address!r} (--collector_address): {e}. Start it with "
            f"`ray start --head --port=6379` on the head node and pass `--collector_address <head-ip>:6379`")from e
    # Ray would queue an actor until its CPUs are free, forever: refuse up front (freed CPUs return within seconds)
    deadline = time.monotonic() + 5.0
    while True:
        total, free = ray.cluster_resources().get("CPU", 0.0), ray.available_resources().get("CPU", 0.0)
        if free >= need_cpus or total < need_cpus or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    if free < need_cpus:
        lease.release()
        raise RemoteCollectorError(
            f"the Ray cluster at {address or 'local'} has {free:g} free CPUs ({total:g} in all) but the remote "
            f"collectors ask for {need_cpus:g} (one per worker); add nodes with `ray start --address=...`, stop other "
            f"Ray jobs, or use fewer env factories (--num_collectors)")
    return lease


def make_remote_collector(env_fns: list[Callable[[], EnvBase]], policy, *, frames_per_batch: int,
                          address: str | None = None, exploration_type: ExplorationType = ExplorationType.RANDOM,
                          batch_timeout_s: float | None = 600.0, seed: int | None = None) -> AMAGORayCollector:
    """A Ray collector with one remote `Collector` (one Ray CPU) per env factory, used like a `MultiAsyncCollector`
    (keep one iterator for the whole run): worker i runs `env_fns[i]()` with its own copy of `policy`, in batches of
    `frames_per_batch` frames, on the Ray cluster at `address` (`"<head-ip>:6379"`, `"auto"`; None: a local
    instance); a batch not ready `batch_timeout_s` after it was requested is an error; `seed` seeds the workers."""
    require("ray", RAY_EXTRA, "collection on remote workers (--collect distributed)")
    if isinstance(env_fns, (str, bytes)) or not isinstance(env_fns, Sequence) or not env_fns:
        raise ValueError(f"env_fns must be a non-empty list of env factories (one per remote worker), got {env_fns!r}")
    import ray.cloudpickle as cloudpickle

    for i, fn in enumerate(env_fns):
        if not callable(fn) or isinstance(fn, EnvBase):
            raise ValueError(f"env_fns[{i}] must be a callable returning an EnvBase (a factory, not an env), "
                             f"got {type(fn).__name__}")
        try:
            cloudpickle.dumps(fn)
        except Exception as e:  # noqa: BLE001
            raise ValueError(f"env_fns[{i}] ({getattr(fn, '__qualname__', fn)!r}) cannot be pickled to send it to "
                             f"a remote worker ({type(e).__name__}: {e}). Use a module-level function or a "
                             f"functools.partial of one, and open files / sockets inside the factory") from e
    env_fns = list(env_fns)
    if int(frames_per_batch) != frames_per_batch or frames_per_batch <= 0:
        raise ValueError(f"frames_per_batch must be a positive integer, got {frames_per_batch!r}")
    n = len(env_fns)
    lease = _connect(address, None, float(n))
    try:
        collector = AMAGORayCollector(
            env_fns, policy, frames_per_batch=int(frames_per_batch), total_frames=-1,
            exploration_type=exploration_type, collector_class=WorkerCollector,
            collector_kwargs=[{"postproc": GlobalTrajIds(i, n)} for i in range(n)],
            remote_configs=[{"num_cpus": 1} for _ in range(n)], sync=False,
            ray_init_config=None, batch_timeout_s=batch_timeout_s, address=address)
    finally:
        lease.release()  # the collector holds its own lease
    collector.total_frames = float("inf")  # endless
    if seed is not None:
        collector._guarded(lambda: collector.set_seed(int(seed)), "was seeded")
    collector.update_policy_weights_()  # sets up the weight channel
    return collector
