"""MazeRunner: goal-conditioned navigation in a random maze (AMAGO appendix C.4), batched in torch. Keys: ``"obs"``
[7], ``"goals"`` [k, 2] (reached ones -1), ``"achieved"`` [1, 2] (the current cell, for relabeling; not an input)."""
from __future__ import annotations

import random

import torch
from torchrl.data import Bounded, Composite, Unbounded

from ._base import BatchedTorchEnv, where_mask

# action -> (di, dj): west, north, east, south, stay (i = row, j = column)
_DIRS = torch.tensor([[0, -1], [-1, 0], [0, 1], [1, 0], [0, 0]], dtype=torch.int64)


def mazerunner_relabel_rewards(achieved: torch.Tensor, goals: torch.Tensor, time_limit: int | None = None):
    """``(rewards [..., T], terminated [..., T], goals_seq [..., T+1, k, 2])`` MazeRunner gives for the cells
    ``achieved [..., T+1, 2]`` and the ordered ``goals [..., k, 2]``; entries after the first terminal are to mask."""
    if achieved.shape[-1] != 2 or goals.shape[-1] != 2:
        raise ValueError(f"achieved and goals must end in 2 (cell coordinates), got {tuple(achieved.shape)} and "
                         f"{tuple(goals.shape)}")
    if achieved.ndim < 2 or achieved.shape[-2] < 1:
        raise ValueError(f"achieved must be [..., T+1, 2], got {tuple(achieved.shape)}")
    T, k = achieved.shape[-2] - 1, goals.shape[-2]
    batch = torch.broadcast_shapes(achieved.shape[:-2], goals.shape[:-2])
    achieved = achieved.expand(*batch, T + 1, 2)
    goals = goals.expand(*batch, k, 2)
    dev = achieved.device
    # match[..., t, j]: the cell after step t is goal j
    match = (achieved[..., 1:, None, :] == goals[..., None, :, :].to(achieved.dtype)).all(-1)
    steps = torch.arange(T, device=dev)
    prev = torch.full(batch, -1, dtype=torch.long, device=dev)
    hits = []
    for j in range(k):  # goal j can only be reached on a step strictly after goal j-1
        cand = match[..., j] & (steps > prev.unsqueeze(-1))
        prev = torch.where(cand.any(-1), cand.long().argmax(-1), torch.full_like(prev, T))
        hits.append(prev)
    hit = torch.stack(hits, -1) if k else torch.zeros(*batch, 0, dtype=torch.long, device=dev)  # [..., k]; T = never
    reached = hit < T
    rewards = torch.zeros(*batch, T + 1, device=dev)
    rewards.scatter_add_(-1, hit.clamp(max=T), reached.float())
    rewards = rewards[..., :T]
    terminated = torch.zeros(*batch, T + 1, dtype=torch.bool, device=dev)
    if k:
        terminated.scatter_(-1, hit[..., -1:].clamp(max=T), reached[..., -1:])
    terminated = terminated[..., :T]
    if time_limit is not None:
        terminated = terminated | (steps + 1 >= time_limit)
    # number of goals completed by observation t: hit step s means completed from observation s+1 on
    obs_t = torch.arange(T + 1, device=dev)
    n_done = ((hit.unsqueeze(-2) + 1) <= obs_t[:, None]).sum(-1)  # [..., T+1]
    done_rows = torch.arange(k, device=dev) < n_done.unsqueeze(-1)  # [..., T+1, k]
    goals_seq = torch.where(done_rows.unsqueeze(-1), torch.full_like(goals[..., None, :, :], -1),
                            goals[..., None, :, :].expand(*batch, T + 1, k, 2))
    return rewards, terminated, goals_seq


def random_maze(dim: int, rnd: random.Random, complexity: float = 0.75, density: float = 0.75) -> torch.Tensor:
    """[dim, dim] bool wall grid (dim odd) of connected free cells, with a spawn pocket at the bottom middle."""
    c = int(complexity * 5 * (2 * dim))
    d = int(density * (dim // 2) ** 2)
    wall = bytearray(dim * dim)
    for i in range(dim):
        wall[i] = wall[(dim - 1) * dim + i] = wall[i * dim] = wall[i * dim + dim - 1] = 1
    half = dim // 2
    for _ in range(d):
        y, x = rnd.randint(0, half) * 2, rnd.randint(0, half) * 2
        wall[y * dim + x] = 1
        for _ in range(c):
            nbrs = [(a, b) for a, b in ((y, x - 2), (y, x + 2), (y - 2, x), (y + 2, x))
                    if 0 <= a < dim and 0 <= b < dim]
            y2, x2 = nbrs[rnd.randrange(len(nbrs))]
            if not wall[y2 * dim + x2]:
                wall[y2 * dim + x2] = 1
                wall[(y2 + (y - y2) // 2) * dim + x2 + (x - x2) // 2] = 1
                y, x = y2, x2
    grid = torch.tensor(list(wall), dtype=torch.bool).view(dim, dim)
    # spawn pocket: clear the bottom rows, then wall off a 1-wide pocket around the start column
    grid[dim - 5:dim - 1, 1:dim - 1] = False
    grid[dim - 4:dim - 1, [dim // 2 - 1, dim // 2 + 1]] = True
    return grid


class MazeRunner(BatchedTorchEnv):
    """Batched MazeRunner (``maze_dim`` forced odd; 5 actions: W, N, E, S, stay; ``randomized_actions`` permutes
    them per hard reset). Task keys: ``maze`` [*B, d, d] bool, ``goals`` [*B, k, 2], ``action_perm`` [*B, 5]."""

    n_actions = 5
    task_keys = ("maze", "goals", "action_perm")

    def __init__(self, num_envs: int | None = 1, maze_dim: int = 11, num_goals: int = 3, time_limit: int = 250,
                 randomized_actions: bool = False, **kw):
        if maze_dim < 7:
            raise ValueError(f"maze_dim must be >= 7 (room for the spawn pocket), got {maze_dim}")
        if num_goals < 1 or time_limit < 1:
            raise ValueError(f"num_goals and time_limit must be >= 1, got {num_goals}, {time_limit}")
        self.dim = maze_dim if maze_dim % 2 else maze_dim + 1
        self.k, self.time_limit, self.randomized_actions = int(num_goals), int(time_limit), randomized_actions
        super().__init__(num_envs, **kw)
        n, d, dev, B = self.n, self.dim, self.device, self.batch_size
        self.maze = torch.ones(n, d, d, dtype=torch.bool, device=dev)
        self.goals = torch.zeros(n, self.k, 2, dtype=torch.int64, device=dev)
        self.action_perm = torch.arange(5, device=dev).repeat(n, 1)
        self.pos = torch.zeros(n, 2, dtype=torch.int64, device=dev)
        self.active = torch.zeros(n, dtype=torch.int64, device=dev)
        self.timer = torch.zeros(n, dtype=torch.int64, device=dev)
        self.start = torch.tensor([d - 2, d // 2], device=dev)
        self._dirs = _DIRS.to(dev)
        self._offsets = torch.arange(1, d, device=dev)
        self.observation_spec = Composite(
            obs=Bounded(0.0, 1.0, (*B, 7), dtype=torch.float32, device=dev),
            goals=Unbounded((*B, self.k, 2), dtype=torch.int64, device=dev),
            achieved=Unbounded((*B, 1, 2), dtype=torch.int64, device=dev),
            shape=B, device=dev)

    def _hard_reset(self, mask):
        ids = mask.nonzero().squeeze(-1).tolist()
        if ids:
            seeds = torch.randint(2 ** 62, (len(ids),), generator=self.rng, device=self.device).tolist()
            mazes = torch.stack([random_maze(self.dim, random.Random(s)) for s in seeds]).to(self.device)
            self.maze[ids] = mazes
            free = ~mazes.flatten(1)
            free[:, int(self.start[0]) * self.dim + int(self.start[1])] = False
            score = torch.rand(free.shape, generator=self.rng, device=self.device).masked_fill(~free, -1.0)
            cells = score.topk(self.k, dim=-1).indices  # a uniformly random ordered subset of free cells
            self.goals[ids] = torch.stack([cells // self.dim, cells % self.dim], -1)
            if self.randomized_actions:
                self.action_perm[ids] = torch.rand(len(ids), 5, generator=self.rng, device=self.device).argsort(-1)
        self._soft_reset(mask)

    def _soft_reset(self, mask):  # one episode per trial: restart it
        self.pos = where_mask(mask, self.start.expand_as(self.pos), self.pos)
        self._zero_where(mask, "active", "timer")

    def _free_counts(self) -> torch.Tensor:
        """[n, 4] empty cells in each direction (W, N, E, S) before the next wall."""
        lines = self.pos[:, None, None, :] + self._dirs[None, :4, None, :] * self._offsets[None, None, :, None]
        lines = lines.clamp(0, self.dim - 1)  # borders are walls, so clamping never counts past them
        ar = torch.arange(self.n, device=self.device)[:, None, None]
        empty = ~self.maze[ar, lines[..., 0], lines[..., 1]]  # [n, 4, d-1]
        return empty.long().cumprod(-1).sum(-1)

    def _obs(self):
        d = float(self.dim)
        obs = torch.cat([self.pos.float() / d, self._free_counts().float() / d,
                         (self.timer.float() / self.time_limit).unsqueeze(-1)], -1)
        done_rows = torch.arange(self.k, device=self.device) < self.active.unsqueeze(-1)
        goals = self.goals.masked_fill(done_rows.unsqueeze(-1), -1)
        return {"obs": obs, "goals": goals, "achieved": self.pos.unsqueeze(1).clone()}

    def _advance(self, action):
        self.timer = self.timer + 1
        move = self._dirs[self.action_perm.gather(1, action.unsqueeze(-1)).squeeze(-1)]
        target = self.pos + move
        ar = torch.arange(self.n, device=self.device)
        blocked = self.maze[ar, target[:, 0], target[:, 1]]
        self.pos = torch.where(blocked.unsqueeze(-1), self.pos, target)
        goal = self.goals.gather(1, self.active.clamp(max=self.k - 1).view(self.n, 1, 1).expand(self.n, 1, 2))[:, 0]
        success = (self.pos == goal).all(-1) & (self.active < self.k)
        self.active = self.active + success.long()
        truncated = self.timer >= self.time_limit
        terminated = (self.active >= self.k) | truncated
        return success.float(), terminated, truncated
