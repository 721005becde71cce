"""``--collect async`` / ``distributed``: TorchRL collector workers beside the learner (the default sync collection:
``trainers/collection.py``)."""
from __future__ import annotations

import time

import torch
from tensordict import TensorDict

from ..collection import Acting, Collection, Counters, Store
from ..logging import add_scalars
from ..metrics import TrialReturnsById, return_metrics
from .feed import CollectorFeed, build_worker_collector, sync_exploration_step
from .threads import LearnerThreads


def check_async(cfg, world_size: int) -> None:
    """The settings of an async collection, each wrong combination named."""
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


class AsyncCollection(Collection):
    """``--collect async`` / ``distributed``: the epoch's steps from the workers and its updates, holding
    ``replay_ratio`` updates per stored step; weights go to the workers every ``--policy_sync_interval`` updates."""

    def __init__(self, cfg, world_size: int = 1):
        check_async(cfg, world_size)
        super().__init__(cfg, local_envs=1)  # the workers build their own envs; this one gives the specs
        self.threads: LearnerThreads | None = None
        self.weight_pushes = 0
        self.acting: Acting | None = None
        self._push = None  # the weight push in flight
        self._env_goal = 0  # env steps stored by the end of this epoch
        self.stored_at_checkpoint = 0  # batches stored right before a checkpoint
        self._pending: list[float] = []  # returns of trials stored by a checkpoint, reported with the next epoch
        self._returns = TrialReturnsById()

    def build_collector(self, make_env, env, acting: Acting):
        """Worker processes, each building its own envs with `make_env` (`env` only gave the specs)."""
        self.acting = acting
        self.collector = build_worker_collector(self.cfg, make_env, acting.actor, acting.primer)
        local = self.cfg.collect == "async" or self.cfg.collector_address is None  # workers on this machine
        self.threads = LearnerThreads(torch.get_num_threads(), self.cfg.num_collectors if local else 0)
        return self.collector

    def start(self, counters: Counters) -> None:
        """Start the feed with the learner's weights (at the first epoch, after a resume)."""
        self.feed = CollectorFeed(self.collector, max_batches=2 * self.cfg.num_collectors, timeout_s=self.cfg.timeout_s)
        self.push_weights(counters)
        self.feed.start()
        self._env_goal = counters.env_steps

    def run_epoch(self, epoch: int, learner, store: Store, ready, counters: Counters) -> dict:
        """Store the epoch's steps as the workers deliver them and make its updates in between, at `replay_ratio`."""
        cfg = self.cfg
        if self.feed is None:
            self.start(counters)
        if epoch >= cfg.start_collecting_at_epoch:  # goals add up: batches stored by a checkpoint count
            self._env_goal += cfg.parallel_envs * cfg.timesteps_per_epoch
        grads_left = cfg.grads_per_epoch if epoch >= cfg.start_learning_at_epoch else 0
        t0, steps0, pushes0 = time.time(), counters.env_steps, self.weight_pushes
        returns, self._pending = self._pending, []
        sums: dict[str, float] = {}
        n_updates, learner_wait = 0, 0.0
        while True:
            learning = grads_left > 0 and ready()
            if learning and learner.grad_steps < self.replay_ratio * counters.env_steps:
                self.fit_threads()
                add_scalars(sums, learner.update())
                grads_left -= 1
                n_updates += 1
                if n_updates % cfg.policy_sync_interval == 0:
                    self.push_weights(counters, wait=False)
                continue
            if counters.env_steps >= self._env_goal and not learning:
                break
            tw = time.time()
            data = self.feed.get()
            if learning:
                learner_wait += time.time() - tw  # ahead of the ratio: waiting for data
            returns += store(data)
        self.threads.restore()
        dt = time.time() - t0
        out = return_metrics(returns, "train", None)
        out["train/env_steps_per_s"] = (counters.env_steps - steps0) / max(dt, 1e-9)
        out["train/learner_wait_s"] = learner_wait
        out["train/replay_ratio"] = learner.grad_steps / max(counters.env_steps, 1)
        out["train/weight_pushes"] = float(self.weight_pushes - pushes0)
        out["train/batches_stored_at_checkpoint"] = float(self.stored_at_checkpoint)
        out["train/partial_trials_closed_on_resume"] = float(self.partial_trials_closed)
        if n_updates:
            out.update(learner.metrics(sums, n_updates, dt))
        return out

    def push_weights(self, counters: Counters, wait: bool = True) -> None:
        """Send the acting weights to the workers; `wait=False` pushes a copy from a helper thread."""
        self.wait_for_push()
        acting = self.acting
        sync_exploration_step(acting.exploration, counters.env_steps, self.cfg.parallel_envs)
        if hasattr(acting.policy, "bump_weights_version"):  # the workers' copies drop their weight caches
            acting.policy.bump_weights_version()
        weights = TensorDict.from_module(acting.actor)
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

    def before_checkpoint(self, store: Store, counters: Counters) -> None:
        """Store every batch the workers have delivered (their returns are reported with the next epoch)."""
        if self.feed is None:
            return
        self.wait_for_push()
        for data in self.feed.ready():
            self._pending += store(data)
            self.stored_at_checkpoint += 1
        sync_exploration_step(self.acting.exploration, counters.env_steps, self.cfg.parallel_envs)

    def on_resume(self, partial_trials_closed: int) -> None:
        super().on_resume(partial_trials_closed)
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
