"""Tiny pure-torch envs for the data tests (no dependency on torchrl_amago.envs)."""
from __future__ import annotations

import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.data import Categorical, Composite, Unbounded
from torchrl.envs import EnvBase


def _flags(shape):
    return Composite(done=Categorical(2, (*shape, 1), dtype=torch.bool),
                     terminated=Categorical(2, (*shape, 1), dtype=torch.bool),
                     truncated=Categorical(2, (*shape, 1), dtype=torch.bool), shape=shape)


class CountingEnv(EnvBase):
    """Sub-env i runs trials of random length in [lo_i, hi_i] (different per env).

    Observations: ``"step"`` (steps since the hard reset) and ``"trial"`` (a globally unique trial id), both
    int64 [1], so a test can check that a window is consecutive steps of one trial.
    """

    batch_locked = True

    def __init__(self, num_envs: int | None = 3, base_len: int = 4, seed: int = 0, trial_base: int = 0):
        shape = torch.Size([] if num_envs is None else [num_envs])
        super().__init__(batch_size=shape)
        n = 1 if num_envs is None else num_envs
        self.lo = torch.arange(n) * 2 + base_len
        self.hi = self.lo * 2 + 1
        self.observation_spec = Composite(step=Unbounded((*shape, 1), dtype=torch.long),
                                          trial=Unbounded((*shape, 1), dtype=torch.long), shape=shape)
        self.action_spec = Categorical(2, shape=shape, dtype=torch.long)
        self.reward_spec = Unbounded((*shape, 1))
        self.done_spec = _flags(shape)
        self.rng = torch.Generator().manual_seed(seed)
        self.n = n
        self.t = torch.zeros(n, dtype=torch.long)
        self.trial = torch.zeros(n, dtype=torch.long)
        self.horizon = torch.zeros(n, dtype=torch.long)
        self.next_trial = 0
        self.trial_base = trial_base  # added to every trial id (e.g. distinct ids per collector worker)

    def _obs(self, **extra):
        out = {"step": self.t.clone().unsqueeze(-1), "trial": self.trial.clone().unsqueeze(-1), **extra}
        return TensorDict({k: v.reshape(*self.batch_size, *v.shape[1:]) for k, v in out.items()},
                          batch_size=self.batch_size)

    def _reset(self, tensordict: TensorDictBase | None, **kwargs) -> TensorDictBase:
        mask = torch.ones(self.n, dtype=torch.bool)
        if tensordict is not None and "_reset" in tensordict.keys():
            mask = tensordict["_reset"].reshape(self.n)
        k = int(mask.sum())
        self.trial[mask] = (torch.arange(self.next_trial, self.next_trial + k) * 10 + torch.arange(self.n)[mask]
                            + self.trial_base)
        self.next_trial += k
        self.t[mask] = 0
        u = torch.rand(self.n, generator=self.rng)
        h = self.lo + (u * (self.hi - self.lo + 1)).long()
        self.horizon = torch.where(mask, h, self.horizon)
        return self._obs()

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        a = tensordict["action"].reshape(self.n)
        self.t = self.t + 1
        end = (self.t >= self.horizon).unsqueeze(-1)
        r = (a.float() + self.t.float() / 100).unsqueeze(-1)
        return self._obs(reward=r, done=end.clone(), terminated=end.clone(), truncated=torch.zeros_like(end))

    def _set_seed(self, seed: int | None):
        self.rng.manual_seed(seed or 0)


def make_counting_env(num_envs: int, base_len: int, seed: int, trial_base: int = 0):
    """A CountingEnv with InitTracker, importable by the spawned workers of a multi-process collector."""
    from torchrl.envs import InitTracker, TransformedEnv

    return TransformedEnv(CountingEnv(num_envs, base_len=base_len, seed=seed, trial_base=trial_base), InitTracker())


def collect(env_fn, frames_per_batch: int, n_batches: int, seed: int = 0):
    """Yield ``n_batches`` collector batches from ``env_fn()`` with InitTracker (random policy)."""
    import warnings

    from torchrl.collectors import Collector
    from torchrl.envs import InitTracker, TransformedEnv

    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        env = TransformedEnv(env_fn(), InitTracker())
        coll = Collector(env, None, frames_per_batch=frames_per_batch, total_frames=frames_per_batch * n_batches)
        out = [d.clone() for d in coll]
        coll.shutdown()
    return out


class GoalGridEnv(EnvBase):
    """A k-goal grid env with MazeRunner's goal rule (tests only).

    The agent moves on a ``size x size`` grid (actions: W, N, E, S, stay; clipped at the borders). Goals must
    be reached in order, one per step: reward 1 when the position equals the active goal, whose row in
    ``"goals"`` [k, 2] then reads -1; reaching the last goal terminates; ``horizon`` steps truncate (even on a
    terminal step).
    ``"achieved"`` [1, 2] is the current position. Set ``forced_goals`` [N, k, 2] to choose the goals of the
    next reset (used to replay a trial with relabeled goals).
    """

    batch_locked = True
    DIRS = torch.tensor([[0, -1], [-1, 0], [0, 1], [1, 0], [0, 0]])

    def __init__(self, num_envs: int = 4, size: int = 4, k: int = 3, horizon: int = 20, seed: int = 0):
        shape = torch.Size([num_envs])
        super().__init__(batch_size=shape)
        self.n, self.size, self.k, self.horizon = num_envs, size, k, horizon
        self.observation_spec = Composite(goals=Unbounded((num_envs, k, 2), dtype=torch.long),
                                          achieved=Unbounded((num_envs, 1, 2), dtype=torch.long), shape=shape)
        self.action_spec = Categorical(5, shape=shape, dtype=torch.long)
        self.reward_spec = Unbounded((num_envs, 1))
        self.done_spec = _flags(shape)
        self.rng = torch.Generator().manual_seed(seed)
        self.forced_goals = None
        self.pos = torch.zeros(num_envs, 2, dtype=torch.long)
        self.goals = torch.zeros(num_envs, k, 2, dtype=torch.long)
        self.active = torch.zeros(num_envs, dtype=torch.long)
        self.t = torch.zeros(num_envs, dtype=torch.long)

    def _obs(self, **extra):
        return TensorDict({"goals": self.goals.clone(), "achieved": self.pos.clone().unsqueeze(1), **extra},
                          batch_size=self.batch_size)

    def _reset(self, tensordict, **kwargs):
        mask = torch.ones(self.n, dtype=torch.bool)
        if tensordict is not None and "_reset" in tensordict.keys():
            mask = tensordict["_reset"].reshape(self.n)
        start = torch.tensor([self.size - 1, self.size // 2])
        if self.forced_goals is not None:
            goals = self.forced_goals.clone()
        else:  # random goals, distinct from the start cell
            cells = torch.stack(torch.meshgrid(torch.arange(self.size), torch.arange(self.size), indexing="ij"),
                                -1).reshape(-1, 2)
            cells = cells[(cells != start).any(-1)]
            pick = torch.stack([torch.randperm(len(cells), generator=self.rng)[: self.k] for _ in range(self.n)])
            goals = cells[pick]
        self.goals = torch.where(mask[:, None, None], goals, self.goals)
        self.pos = torch.where(mask[:, None], start, self.pos)
        self.active = torch.where(mask, 0, self.active)
        self.t = torch.where(mask, 0, self.t)
        return self._obs()

    def _step(self, tensordict):
        a = tensordict["action"].reshape(self.n)
        self.pos = (self.pos + self.DIRS[a]).clamp(0, self.size - 1)
        self.t = self.t + 1
        idx = self.active.clamp(max=self.k - 1)
        target = self.goals[torch.arange(self.n), idx]
        success = (self.active < self.k) & (self.pos == target).all(-1)
        self.goals[torch.arange(self.n)[success], idx[success]] = -1
        self.active = self.active + success.long()
        term = (self.active >= self.k).unsqueeze(-1)
        trunc = (self.t >= self.horizon).unsqueeze(-1)  # independent of success, like gymnasium TimeLimit
        return self._obs(reward=success.float().unsqueeze(-1), terminated=term, truncated=trunc, done=term | trunc)

    def _set_seed(self, seed):
        self.rng.manual_seed(seed or 0)
