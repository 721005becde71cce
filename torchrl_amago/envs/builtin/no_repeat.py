"""No-repeat: ``num_actions`` steps, ``1 / num_actions`` per action new to the episode, 0 per repeat; obs: the time."""
from __future__ import annotations

import torch
from torchrl.data import Bounded, Composite

from ._base import BatchedTorchEnv


def random_return(num_actions: int) -> float:
    """Expected return of the uniformly random policy: the expected share of actions drawn at least once."""
    return 1.0 - (1.0 - 1.0 / num_actions) ** num_actions


class NoRepeat(BatchedTorchEnv):
    """Batched no-repeat task. No task keys: every episode is the same problem."""

    def __init__(self, num_envs: int | None = 1, num_actions: int = 8, **kw):
        if num_actions < 2:
            raise ValueError(f"num_actions must be >= 2, got {num_actions}")
        self.n_actions = int(num_actions)
        super().__init__(num_envs, **kw)
        n, dev, B = self.n, self.device, self.batch_size
        self.t = torch.zeros(n, dtype=torch.int64, device=dev)
        self.taken = torch.zeros(n, self.n_actions, dtype=torch.bool, device=dev)
        self.observation_spec = Composite(observation=Bounded(0.0, 1.0, (*B, 1), dtype=torch.float32, device=dev),
                                          shape=B, device=dev)

    def _hard_reset(self, mask):
        self._zero_where(mask, "t", "taken")

    _soft_reset = _hard_reset

    def _obs(self):
        return {"observation": (self.t.float() / self.n_actions).unsqueeze(-1)}

    def _advance(self, action):
        fresh = ~self.taken.gather(1, action.unsqueeze(1)).squeeze(1)
        self.taken = self.taken.scatter(1, action.unsqueeze(1), True)
        self.t = self.t + 1
        done = self.t >= self.n_actions
        return fresh.float() / self.n_actions, done, torch.zeros_like(done)
