"""T-Maze (Ni et al. 2023), AMAGO's "Alt" variants, batched in torch: the goal side is shown only at the first visit
of the oracle cell and rewarded at the episode's last step (docs/api/envs.md). Actions: right, up, left, down."""
from __future__ import annotations

import torch
from torchrl.data import Bounded, Composite

from ._base import BatchedTorchEnv

_MOVES = torch.tensor([[1, 0], [0, 1], [-1, 0], [0, -1]], dtype=torch.int64)  # (dx, dy) per action


class TMaze(BatchedTorchEnv):
    """Batched T-Maze. Task key: ``goal_y`` ([*B] int64, -1 or 1)."""

    n_actions = 4
    task_keys = ("goal_y",)

    def __init__(self, num_envs: int | None = 1, corridor_length: int = 10, passive: bool = True,
                 penalty: float = 0.0, goal_reward: float = 1.0, **kw):
        if corridor_length < 1:
            raise ValueError(f"corridor_length must be >= 1, got {corridor_length}")
        self.corridor_length, self.passive = int(corridor_length), bool(passive)
        self.oracle_length = 0 if passive else 1
        self.episode_length = self.corridor_length + (1 if passive else 3)
        self.penalty, self.goal_reward = float(penalty), float(goal_reward)
        super().__init__(num_envs, **kw)
        n, dev, B = self.n, self.device, self.batch_size
        self.end_x = self.oracle_length + self.corridor_length
        self.x = torch.zeros(n, dtype=torch.int64, device=dev)
        self.y, self.t, self.goal_y = torch.zeros_like(self.x), torch.zeros_like(self.x), torch.ones_like(self.x)
        self.visited = torch.zeros(n, dtype=torch.bool, device=dev)  # oracle cell seen before
        self.first_visit = torch.zeros_like(self.visited)  # this observation is the first at the oracle cell
        self._moves = _MOVES.to(dev)
        self.observation_spec = Composite(observation=Bounded(-1.0, 1.0, (*B, 2), dtype=torch.float32, device=dev),
                                          shape=B, device=dev)

    def _hard_reset(self, mask):
        self.goal_y = torch.where(mask, self._randint(2, self.n) * 2 - 1, self.goal_y)
        self._soft_reset(mask)

    def _soft_reset(self, mask):
        self.x = torch.where(mask, self.oracle_length, self.x)
        self._zero_where(mask, "y", "t")
        at_oracle = self.x == 0
        self.first_visit = torch.where(mask, at_oracle, self.first_visit)
        self.visited = torch.where(mask, at_oracle, self.visited)

    def _obs(self):
        first = torch.where(self.x == self.end_x, 1, 0)
        second = torch.where(self.x == self.end_x, self.y, torch.where(self.first_visit, self.goal_y, 0))
        return {"observation": torch.stack([first, second], -1).float()}

    def _advance(self, action):
        self.t = self.t + 1
        move = self._moves[action]
        nx, ny = self.x + move[:, 0], self.y + move[:, 1]
        valid = ((ny == 0) & (nx >= 0) & (nx <= self.end_x)) | ((nx == self.end_x) & (ny.abs() == 1))
        self.x, self.y = torch.where(valid, nx, self.x), torch.where(valid, ny, self.y)
        at_oracle = self.x == 0
        self.first_visit, self.visited = at_oracle & ~self.visited, self.visited | at_oracle
        done = self.t >= self.episode_length
        step_cost = self.penalty * ((action != 0) & (self.t > self.oracle_length)).float()
        reward = torch.where(done, self.goal_reward * (self.y == self.goal_y).float(), step_cost)
        return reward, done, done.clone()
