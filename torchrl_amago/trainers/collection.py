"""How env steps reach the replay during an epoch: :class:`SyncCollection` (the default) collects, then updates;
``scale.collection.AsyncCollection`` stores what workers beside the learner deliver and updates in between. A
collection gets what it acts with when its collector is built, and per epoch the learner, a `store(batch)` and the
run's counters; it never sees the trainer."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch
from tensordict import TensorDictBase
from torchrl.collectors import Collector
from torchrl.envs import EnvBase
from torchrl.envs.utils import ExplorationType

from ..envs.transforms import add_action_counts
from .config import COLLECT_MODES
from .metrics import episode_metrics, finished_trial_returns, return_metrics

Store = Callable[[TensorDictBase], list]  # a collected batch -> its finished trials' returns


@dataclass
class Counters:
    """A run's progress (its gradient steps are the learner's)."""

    epoch: int = 0
    env_steps: int = 0  # env steps stored, over every torchrun rank


@dataclass
class Acting:
    """What a collection acts with: the policy with its exploration (`actor`), the policy alone, the exploration
    module, a TorchRL recurrent policy's primer, and the learner's device."""

    actor: torch.nn.Module
    policy: torch.nn.Module
    exploration: torch.nn.Module | None
    primer: object
    device: torch.device
    before_acting: Callable[[], None] = lambda: None  # e.g. drop the policy's weight caches after graph replays


def make_collection(cfg, world_size: int) -> "Collection":
    """The run's collection mode (``--collect``), its settings checked first (async combinations each named)."""
    if cfg.collect not in COLLECT_MODES:
        raise ValueError(f"--collect={cfg.collect!r} is not one of {list(COLLECT_MODES)}")
    if cfg.collect == "sync":
        return SyncCollection(cfg)
    from .scale.collection import AsyncCollection

    return AsyncCollection(cfg, world_size)


class WithActionCounts:
    """An env factory whose envs also write ``action_counts`` (``envs.ActionCounts``), picklable for workers."""

    def __init__(self, make_env: Callable[[int], EnvBase]):
        self.make_env = make_env

    def __call__(self, num_envs: int) -> EnvBase:
        return add_action_counts(self.make_env(num_envs))


class Collection:
    """What the collection modes share."""

    feed = None  # async only: the workers' CollectorFeed
    weight_pushes = 0  # async only

    def __init__(self, cfg, local_envs: int):
        self.cfg = cfg
        self.local_envs = local_envs  # envs of the training env this process builds
        # updates per stored env step of the async learner (default: the sync epoch's)
        self.replay_ratio = cfg.replay_ratio if cfg.replay_ratio is not None else (
            cfg.grads_per_epoch / max(1, cfg.parallel_envs * cfg.timesteps_per_epoch))
        self.collector = None
        self.partial_trials_closed = 0  # trials the last resume closed (reported by async)

    def fit_threads(self) -> None:
        """Set the learner's torch threads for the next phase of an update (async)."""

    def push_weights(self, counters: Counters, wait: bool = True) -> None:
        """Send the acting weights to the workers (async; nothing to send in sync)."""

    def before_checkpoint(self, store: Store, counters: Counters) -> None:
        """Called before ``latest.pt`` is written (async: store what the workers delivered)."""

    def on_resume(self, partial_trials_closed: int) -> None:
        """The envs restart fresh trials after a resume."""
        self.partial_trials_closed = partial_trials_closed


class SyncCollection(Collection):
    """``--collect sync``: one ``Collector`` batch of the epoch's steps, then the epoch's updates."""

    def __init__(self, cfg):
        super().__init__(cfg, local_envs=cfg.parallel_envs)
        self._batches = None  # the collector's iterator
        self._running = None  # each env's partial trial return, carried over to the next batch
        self.acting: Acting | None = None

    def build_collector(self, make_env, env: EnvBase, acting: Acting) -> Collector:
        """A TorchRL `Collector` of one epoch's steps on `env` (`make_env` builds the async workers' envs)."""
        self.acting = acting
        # an env without a device steps on the CPU: naming it brings the policy's outputs back there
        self.collector = Collector(env, acting.actor, frames_per_batch=self.cfg.parallel_envs *
                                   self.cfg.timesteps_per_epoch, total_frames=-1,
                                   exploration_type=ExplorationType.RANDOM, policy_device=acting.device,
                                   env_device=env.device or torch.device("cpu"), storing_device="cpu")
        return self.collector

    def collect(self, store: Store) -> dict:
        """Act for one collector batch and `store` it; its train metrics."""
        if self._batches is None:
            self._batches = iter(self.collector)
        self.acting.policy.eval()
        self.acting.before_acting()
        t0 = time.time()
        data = next(self._batches)
        dt = time.time() - t0
        out = return_metrics(store(data), "train", None)
        out.update(episode_metrics(data, "train"))
        out["train/env_steps_per_s"] = data.numel() / max(dt, 1e-9)
        return out

    def run_epoch(self, epoch: int, learner, store: Store, ready: Callable[[], bool], counters: Counters) -> dict:
        """Collect the epoch's steps, then make its updates once `ready()`."""
        cfg, rec = self.cfg, {}
        if epoch >= cfg.start_collecting_at_epoch and cfg.timesteps_per_epoch > 0:
            rec.update(self.collect(store))
        if epoch >= cfg.start_learning_at_epoch and cfg.grads_per_epoch > 0 and ready():
            rec.update(learner.learn(cfg.grads_per_epoch))
        return rec

    def finished_returns(self, data) -> list[float]:
        returns, self._running = finished_trial_returns(data, self._running)
        return returns

    def on_resume(self, partial_trials_closed: int) -> None:
        super().on_resume(partial_trials_closed)
        self._running = None

    def close(self) -> None:
        self.collector.shutdown()
