"""How env steps reach the replay during an epoch: :class:`SyncCollection` collects, then updates;
:class:`AsyncCollection` stores what workers beside the learner deliver and updates in between."""
from __future__ import annotations

import time
from typing import Callable

import torch
from tensordict import TensorDict
from torchrl.collectors import Collector
from torchrl.envs import EnvBase
from torchrl.envs.utils import ExplorationType

from ...envs.transforms import add_action_counts
from ..config import COLLECT_MODES
from ..logging import add_scalars
from ..metrics import TrialReturnsById, episode_metrics, finished_trial_returns, return_metrics
from .feed import CollectorFeed, build_worker_collector, sync_exploration_step
from .threads import LearnerThreads


def make_collection(cfg, world_size: int) -> "Collection":
    """The run's collection mode (``--collect``), its settings checked first (async combinations each named)."""
    if cfg.collect not in COLLECT_MODES:
        raise ValueError(f"--collect={cfg.collect!r} is not one of {list(COLLECT_MODES)}")
    if cfg.collect == "sync":
        return SyncCollection(cfg)
    if cfg.num_collectors < 1:
        raise ValueError(f"--num_collectors must be >= 1 with --collect {cfg.collect}, got {cfg.num_collectors}")
    if cfg.num_collectors > cfg.parallel_envs:
        raise ValueError(f"--num_collectors={cfg.num_collectors} exceeds --parallel_envs={cfg.parallel_envs}: every "
                         f"collector needs at least one env")
    if cfg.parallel_envs % cfg.num_collectors:
        raise ValueError(f"--parallel_envs={cfg.parallel_envs} is not a multiple of --num_collectors="
                         f"{cfg.num_collectors} (each collector runs parallel_envs / num_collectors envs)")
    if cfg.start_collecting_at_epoch >= cfg.epochs or cfg.timesteps_per_epoch == 0:
        raise ValueError(f"--collect {cfg.collect} needs env collection, but this run collects nothing "
                         f"(--timesteps_per_epoch 0 or an offline-only run): use --collect sync")
    if world_size > 1:
        raise ValueError(f"--collect {cfg.collect} under torchrun is not supported: each rank's learner would wait "
                         f"on its own collectors at different times; use --collect sync with torchrun")
    return AsyncCollection(cfg)


class WithActionCounts:
    """An env factory whose envs also write ``action_counts`` (``envs.ActionCounts``), picklable for workers."""

    def __init__(self, make_env: Callable[[int], EnvBase]):
        self.make_env = make_env

    def __call__(self, num_envs: int) -> EnvBase:
        return add_action_counts(self.make_env(num_envs))


class Collection:
    """What the two modes share."""

    feed: CollectorFeed | None = None  # async only
    weight_pushes = 0  # async only

    def __init__(self, cfg, local_envs: int):
        self.cfg = cfg
        self.local_envs = local_envs  # envs of the training env this process builds
        # updates per stored env step of the async learner (default: the sync epoch's)
        self.replay_ratio = cfg.replay_ratio if cfg.replay_ratio is not None else (
            cfg.grads_per_epoch / max(1, cfg.parallel_envs * cfg.timesteps_per_epoch))
        self.collector = None

    def fit_threads(self) -> None:
        """Set the learner's torch threads for the next phase of an update (async)."""

    def before_checkpoint(self, trainer) -> None:
        """Called before ``latest.pt`` is written (async: store what the workers delivered)."""


class SyncCollection(Collection):
    """``--collect sync``: one ``Collector`` batch of the epoch's steps, then the epoch's updates."""

    def __init__(self, cfg):
        super().__init__(cfg, local_envs=cfg.parallel_envs)
        self._batches = None  # the collector's iterator
        self._running = None  # each env's partial trial return, carried over to the next batch

    def build_collector(self, trainer, make_env, primer) -> Collector:
        # an env without a device steps on the CPU: naming it brings the policy's outputs back there
        self.collector = Collector(trainer.train_env, trainer.actor,
                                   frames_per_batch=self.cfg.parallel_envs * self.cfg.timesteps_per_epoch,
                                   total_frames=-1, exploration_type=ExplorationType.RANDOM,
                                   policy_device=trainer.device,
                                   env_device=trainer.train_env.device or torch.device("cpu"), storing_device="cpu")
        return self.collector

    def collect(self, trainer) -> dict:
        """`trainer.collect()`: act for one collector batch, store it; its train metrics."""
        if self._batches is None:
            self._batches = iter(self.collector)
        trainer.policy.eval()
        trainer.refresh_acting_caches()
        t0 = time.time()
        data = next(self._batches)
        dt = time.time() - t0
        out = return_metrics(trainer.store(data), "train", None)
        out.update(episode_metrics(data, "train"))
        out["train/env_steps_per_s"] = data.numel() / max(dt, 1e-9)
        return out

    def run_epoch(self, trainer, epoch: int) -> dict:
        cfg, rec = self.cfg, {}
        if epoch >= cfg.start_collecting_at_epoch and cfg.timesteps_per_epoch > 0:
            rec.update(trainer.collect())
        if epoch >= cfg.start_learning_at_epoch and cfg.grads_per_epoch > 0 and trainer.ready_to_learn():
            rec.update(trainer.learn())
        return rec

    def finished_returns(self, data) -> list[float]:
        returns, self._running = finished_trial_returns(data, self._running)
        return returns

    def on_resume(self) -> None:
        self._running = None

    def close(self) -> None:
        self.collector.shutdown()


class AsyncCollection(Collection):
    """``--collect async`` / ``distributed``: the epoch's steps from the workers and its updates, holding
    ``replay_ratio`` updates per stored step; weights go to the workers every ``--policy_sync_interval`` updates."""

    def __init__(self, cfg):
        super().__init__(cfg, local_envs=1)  # the workers build their own envs; this one gives the specs
        self.threads: LearnerThreads | None = None
        self.weight_pushes = 0
        self._push = None  # the weight push in flight
        self._env_goal = 0  # env steps stored by the end of this epoch
        self.stored_at_checkpoint = 0  # batches stored right before a checkpoint
        self._pending: list[float] = []  # returns of trials stored by a checkpoint, reported with the next epoch
        self._returns = TrialReturnsById()

    def build_collector(self, trainer, make_env, primer):
        self.collector = build_worker_collector(self.cfg, make_env, trainer.actor, primer)
        local = self.cfg.collect == "async" or self.cfg.collector_address is None  # workers on this machine
        self.threads = LearnerThreads(torch.get_num_threads(), self.cfg.num_collectors if local else 0)
        return self.collector

    def start(self, trainer) -> None:
        """Start the feed with the learner's weights (at the first epoch, after a resume)."""
        self.feed = CollectorFeed(self.collector, max_batches=2 * self.cfg.num_collectors, timeout_s=self.cfg.timeout_s)
        trainer.push_weights()
        self.feed.start()
        self._env_goal = trainer.env_steps

    def run_epoch(self, trainer, epoch: int) -> dict:
        cfg = self.cfg
        if self.feed is None:
            self.start(trainer)
        if epoch >= cfg.start_collecting_at_epoch:  # goals add up: batches stored by a checkpoint count
            self._env_goal += cfg.parallel_envs * cfg.timesteps_per_epoch
        grads_left = cfg.grads_per_epoch if epoch >= cfg.start_learning_at_epoch else 0
        t0, steps0, pushes0 = time.time(), trainer.env_steps, self.weight_pushes
        returns, self._pending = self._pending, []
        sums: dict[str, float] = {}
        n_updates, learner_wait = 0, 0.0
        while True:
            learning = grads_left > 0 and trainer.ready_to_learn()
            if learning and trainer.grad_steps < self.replay_ratio * trainer.env_steps:
                self.fit_threads()
                add_scalars(sums, trainer.update())
                grads_left -= 1
                n_updates += 1
                if n_updates % cfg.policy_sync_interval == 0:
                    trainer.push_weights(wait=False)
                continue
            if trainer.env_steps >= self._env_goal and not learning:
                break
            tw = time.time()
            data = self.feed.get()
            if learning:
                learner_wait += time.time() - tw  # ahead of the ratio: waiting for data
            returns += trainer.store(data)
        self.threads.restore()
        dt = time.time() - t0
        out = return_metrics(returns, "train", None)
        out["train/env_steps_per_s"] = (trainer.env_steps - steps0) / max(dt, 1e-9)
        out["train/learner_wait_s"] = learner_wait
        out["train/replay_ratio"] = trainer.grad_steps / max(trainer.env_steps, 1)
        out["train/weight_pushes"] = float(self.weight_pushes - pushes0)
        out["train/batches_stored_at_checkpoint"] = float(self.stored_at_checkpoint)
        out["train/partial_trials_closed_on_resume"] = float(trainer.partial_trials_closed)
        if n_updates:
            out.update(trainer.update_metrics(sums, n_updates, dt))
        return out

    def push_weights(self, trainer, wait: bool = True) -> None:
        """Send the acting weights to the workers; `wait=False` pushes a copy from a helper thread."""
        self.wait_for_push()
        sync_exploration_step(trainer.exploration, trainer.env_steps, self.cfg.parallel_envs)
        if hasattr(trainer.policy, "bump_weights_version"):  # the workers' copies drop their weight caches
            trainer.policy.bump_weights_version()
        weights = TensorDict.from_module(trainer.actor)
        if not wait:
            weights = weights.detach().clone()  # the learner's own change while the push runs
        self._push = self.feed.start_call(lambda: self.collector.update_policy_weights_(weights), "weight push")
        self.weight_pushes += 1
        if wait:
            self.wait_for_push()

    def wait_for_push(self) -> None:
        """Wait until the last weight push has reached every worker."""
        push, self._push = self._push, None
        if push is not None:
            self.feed.wait_call(push)

    def fit_threads(self) -> None:
        """Leave a core to each local worker that acts now (threads.py)."""
        if self.feed is not None:
            self.threads.apply(self.feed.acting_workers(), self.feed.workers_cpu_s())

    def finished_returns(self, data) -> list[float]:
        return self._returns.add(data)

    def before_checkpoint(self, trainer) -> None:
        """Store every batch the workers have delivered (their returns are reported with the next epoch)."""
        if self.feed is None:
            return
        self.wait_for_push()
        for data in self.feed.ready():
            self._pending += trainer.store(data)
            self.stored_at_checkpoint += 1
        sync_exploration_step(trainer.exploration, trainer.env_steps, self.cfg.parallel_envs)

    def on_resume(self) -> None:
        self._returns.drop_partial()

    def close(self) -> None:
        if self.feed is None:
            self.collector.shutdown()
            return
        if self._push is not None:  # bounded: a worker may be dead
            self._push.thread.join(timeout=5.0)
            self._push = None
        self.feed.close()
        self.feed = None
