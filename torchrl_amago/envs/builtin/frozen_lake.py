"""Meta-Frozen-Lake (AMAGO ``toy_gym.MetaFrozenLake``), batched in torch: ``k_episodes`` attempts on one random
lake, soft-reset on the same step; observation ``[x/size, y/size, reset_signal, attempts_done/k_episodes]``."""
from __future__ import annotations

import torch
from torchrl.data import Bounded, Composite

from ..transforms import episode_stats_spec
from ._base import BatchedTorchEnv, where_mask

_MOVES = torch.tensor([[0, 0], [1, 0], [-1, 0], [0, 1], [0, -1]], dtype=torch.int64)


def random_lake_maps(m: int, size: int, generator: torch.Generator, p_frozen: float = 0.8,
                     device="cpu") -> torch.Tensor:
    """[m, size, size] bool hole maps with a hole-free path, as gymnasium's ``generate_random_map``."""
    out = torch.zeros(m, size, size, dtype=torch.bool, device=device)
    todo = torch.arange(m, device=device)
    while len(todo):
        holes = torch.rand(len(todo), size, size, generator=generator, device=device) >= p_frozen
        holes[:, 0, 0] = False
        holes[:, -1, -1] = False
        ok = _reachable(holes)[:, -1, -1]
        out[todo[ok]] = holes[ok]
        todo = todo[~ok]
    return out


def _reachable(holes: torch.Tensor) -> torch.Tensor:
    """Flood fill from (0, 0) through non-hole cells: [m, s, s] bool."""
    free = ~holes
    reach = torch.zeros_like(holes)
    reach[:, 0, 0] = True
    for _ in range(holes.shape[-1] ** 2):
        grow = reach.clone()
        grow[:, 1:] |= reach[:, :-1]
        grow[:, :-1] |= reach[:, 1:]
        grow[:, :, 1:] |= reach[:, :, :-1]
        grow[:, :, :-1] |= reach[:, :, 1:]
        grow &= free
        if torch.equal(grow, reach):
            break
        reach = grow
    return reach


class MetaFrozenLake(BatchedTorchEnv):
    """Batched Meta-Frozen-Lake; writes the ``episode_*`` keys. ``max_episode_steps=None``: ``size**2`` (x2 in hard
    mode) / ``(1 - slip_chance)``. Task keys: ``holes`` ([*B, size, size] bool), ``action_perm`` ([*B, 5])."""

    n_actions = 5
    task_keys = ("holes", "action_perm")

    def __init__(self, num_envs: int | None = 1, size: int = 5, k_episodes: int = 10, hard_mode: bool = False,
                 recover_mode: bool = False, slip_chance: float = 0.0, max_episode_steps: int | None = None,
                 show_k_progress: bool = True, **kw):
        if size < 2 or k_episodes < 1:
            raise ValueError(f"size must be >= 2 and k_episodes >= 1, got size={size}, k_episodes={k_episodes}")
        if not 0.0 <= slip_chance < 1.0:
            raise ValueError(f"slip_chance must be in [0, 1), got {slip_chance}")
        self.size, self.k_episodes, self.hard_mode = int(size), int(k_episodes), hard_mode
        self.recover_mode, self.slip_chance, self.show_k_progress = recover_mode, float(slip_chance), show_k_progress
        if max_episode_steps is None:
            max_episode_steps = size ** 2 * (2 if hard_mode else 1)
            if slip_chance > 0:
                max_episode_steps = int(max_episode_steps / (1 - slip_chance))
        self.max_episode_steps = int(max_episode_steps)
        super().__init__(num_envs, **kw)
        n, s, dev, B = self.n, self.size, self.device, self.batch_size
        self.holes = torch.zeros(n, s, s, dtype=torch.bool, device=dev)
        self.active_holes = self.holes.clone()
        self.action_perm = torch.arange(5, device=dev).repeat(n, 1)
        self.pos = torch.zeros(n, 2, dtype=torch.int64, device=dev)
        self.k = torch.zeros(n, dtype=torch.int64, device=dev)
        self.ep_steps = torch.zeros_like(self.k)
        self.ep_ret, self.last_ret = torch.zeros(n, device=dev), torch.zeros(n, device=dev)
        self.reset_signal = torch.ones(n, dtype=torch.bool, device=dev)
        self.ep_end = torch.zeros(n, dtype=torch.bool, device=dev)
        self.ep_success = torch.zeros_like(self.ep_end)
        self._moves = _MOVES.to(dev)
        self.observation_spec = Composite(observation=Bounded(0.0, 1.0, (*B, 4), dtype=torch.float32, device=dev),
                                          **episode_stats_spec(B, dev, success=True), shape=B, device=dev)

    def _hard_reset(self, mask):
        ids = mask.nonzero().squeeze(-1)
        if len(ids):
            self.holes[ids] = random_lake_maps(len(ids), self.size, self.rng, device=self.device)
            perm = torch.arange(5, device=self.device).repeat(len(ids), 1)
            if self.hard_mode:
                swap = self._rand(len(ids)) < 0.5
                perm[swap, 1], perm[swap, 3] = 3, 1
            self.action_perm[ids] = perm
        self._soft_reset(mask)

    def _soft_reset(self, mask):  # restart the trial on the same map
        self._zero_where(mask, "k", "ep_end", "ep_success", "last_ret")
        self._new_attempt(mask)

    def _new_attempt(self, mask):
        self.active_holes = where_mask(mask, self.holes, self.active_holes)
        self._zero_where(mask, "pos", "ep_steps", "ep_ret")
        self.reset_signal = self.reset_signal | mask

    def _obs(self):
        xy = self.pos
        if self.hard_mode:
            jitter = (self._rand(self.n) < 0.25).unsqueeze(-1) * (self._randint(3, self.n, 2) - 1)
            xy = (xy + jitter).clamp(0, self.size - 1)
        prog = self.k.float() / self.k_episodes if self.show_k_progress else torch.zeros(self.n, device=self.device)
        obs = torch.cat([xy.float() / self.size, self.reset_signal.float().unsqueeze(-1), prog.unsqueeze(-1)], -1)
        return {"observation": obs, **self._episode_stats(self.k)}

    def _advance(self, action):
        n, s, ar = self.n, self.size, torch.arange(self.n, device=self.device)
        self.ep_steps = self.ep_steps + 1
        if self.slip_chance > 0:
            action = torch.where(self._rand(n) < self.slip_chance, 0, action)
        move = self._moves[self.action_perm.gather(1, action.unsqueeze(-1)).squeeze(-1)]
        nxt = (self.pos + move).clamp(0, s - 1)
        if self.hard_mode:
            melt = (nxt != self.pos).any(-1) & (self._rand(n) < 0.33)
            self.active_holes[ar[melt], self.pos[melt, 0], self.pos[melt, 1]] = True
        on_goal = (nxt == s - 1).all(-1)
        on_hole = self.active_holes[ar, nxt[:, 0], nxt[:, 1]] & ~on_goal
        if self.recover_mode:
            reward, soft = torch.where(on_hole, -0.1, on_goal.float()), on_goal
            self.pos = torch.where(on_hole.unsqueeze(-1), self.pos, nxt)
        else:
            reward, self.pos, soft = on_goal.float(), nxt, on_goal | on_hole
        soft = soft | (self.ep_steps >= self.max_episode_steps)
        self.ep_ret = self.ep_ret + reward
        self.ep_end, self.ep_success = soft, on_goal & soft
        self.last_ret = torch.where(soft, self.ep_ret, 0.0)
        self.k = self.k + soft.long()
        self.reset_signal = torch.zeros_like(soft)
        self._new_attempt(soft)
        terminated = self.k >= self.k_episodes
        return reward, terminated, torch.zeros_like(terminated)
