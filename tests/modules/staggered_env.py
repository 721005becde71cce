"""A batched toy env whose sub-envs run trials of different fixed lengths, so they reset at different steps
(tests of per-env acting state; importable by the spawned workers of TorchRL's multi-process collectors)."""
from __future__ import annotations

import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.data import Categorical, Composite, Unbounded
from torchrl.envs import EnvBase

OBS, ACTIONS = 3, 3


class StaggeredEnv(EnvBase):
    """Sub-env i ends every trial (``done``) after ``lengths[i]`` steps; observations are random [3] floats
    from the env's own generator; reward 1 when the action is the argmax of the observation."""

    batch_locked = True

    def __init__(self, lengths: tuple[int, ...], seed: int = 0):
        n = len(lengths)
        shape = torch.Size([n])
        super().__init__(batch_size=shape)
        self.lengths = torch.tensor(lengths, dtype=torch.long)
        self.observation_spec = Composite(observation=Unbounded((n, OBS)), shape=shape)
        self.action_spec = Categorical(ACTIONS, shape=shape, dtype=torch.long)
        self.reward_spec = Unbounded((n, 1))
        self.done_spec = Composite(done=Categorical(2, (n, 1), dtype=torch.bool),
                                   terminated=Categorical(2, (n, 1), dtype=torch.bool),
                                   truncated=Categorical(2, (n, 1), dtype=torch.bool), shape=shape)
        self.rng = torch.Generator().manual_seed(seed)
        self.t = torch.zeros(n, dtype=torch.long)
        self.obs = torch.zeros(n, OBS)

    def _new_obs(self, mask: torch.Tensor) -> None:
        self.obs = torch.where(mask[:, None], torch.randn(self.obs.shape, generator=self.rng), self.obs)

    def _reset(self, tensordict: TensorDictBase | None, **kwargs) -> TensorDictBase:
        n = self.batch_size[0]
        mask = torch.ones(n, dtype=torch.bool)
        if tensordict is not None and "_reset" in tensordict.keys():
            mask = tensordict["_reset"].reshape(n)
        self.t = torch.where(mask, 0, self.t)
        self._new_obs(mask)
        return TensorDict(observation=self.obs.clone(), batch_size=self.batch_size)

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        a = tensordict["action"].reshape(-1)
        r = (a == self.obs.argmax(-1)).float().unsqueeze(-1)
        self.t = self.t + 1
        done = (self.t >= self.lengths).unsqueeze(-1)
        self._new_obs(torch.ones_like(self.t, dtype=torch.bool))
        return TensorDict(observation=self.obs.clone(), reward=r, done=done.clone(), terminated=done.clone(),
                          truncated=torch.zeros_like(done), batch_size=self.batch_size)

    def _set_seed(self, seed: int | None):
        self.rng.manual_seed(seed or 0)


def make_staggered_env(lengths: tuple[int, ...], seed: int = 0):
    """StaggeredEnv in AMAGO's per-step format (InitTracker, prev_action / prev_reward, time_idx)."""
    from torchrl_amago.envs import make_amago_env

    return make_amago_env(StaggeredEnv(lengths, seed))
