"""Dark Key-To-Door (AMAGO ``toy_gym.RoomKeyDoor``), batched in torch: the key, then the door, for ``meta_horizon``
steps, attempts restarted with a dummy step; observation ``[x/size, y/size, has_key, attempt_time/max_steps]``."""
from __future__ import annotations

import torch
from torchrl.data import Bounded, Composite

from ..transforms import episode_stats_spec
from ._base import BatchedTorchEnv, where_mask

_DIRS = torch.tensor([[0, -1], [-1, 0], [0, 1], [1, 0], [0, 0]], dtype=torch.int64)


class DarkKeyDoor(BatchedTorchEnv):
    """Batched RoomKeyDoor; ``*_location``: ``None`` (random) or ``(x, y)``. Task keys: ``start``, ``key``, ``goal``."""

    n_actions = 5
    task_keys = ("start", "key", "goal", "action_perm")

    def __init__(self, num_envs: int | None = 1, size: int = 9, max_episode_steps: int = 50,
                 meta_horizon: int = 500, dark: bool = True, randomize_actions: bool = False,
                 start_location=None, key_location=None, goal_location=None, **kw):
        if size < 1 or max_episode_steps < 1 or meta_horizon < 1:
            raise ValueError(f"size, max_episode_steps and meta_horizon must be >= 1, got {size}, "
                             f"{max_episode_steps}, {meta_horizon}")
        self.size, self.H, self.meta_horizon = int(size), int(max_episode_steps), int(meta_horizon)
        self.dark, self.randomize_actions = dark, randomize_actions
        self.fixed = {"start": start_location, "key": key_location, "goal": goal_location}
        for name, loc in self.fixed.items():
            if loc is not None and (len(loc) != 2 or not all(0 <= int(c) < size for c in loc)):
                raise ValueError(f"{name}_location must be None or (x, y) inside the {size}x{size} room, got {loc}")
        super().__init__(num_envs, **kw)
        n, dev, B = self.n, self.device, self.batch_size
        z2 = torch.zeros(n, 2, dtype=torch.int64, device=dev)
        self.start, self.key, self.goal, self.pos = z2.clone(), z2.clone(), z2.clone(), z2.clone()
        self.action_perm = torch.arange(5, device=dev).repeat(n, 1)
        z = torch.zeros(n, dtype=torch.int64, device=dev)
        self.ep_time, self.global_time, self.count = z.clone(), z.clone(), z.clone()
        f = torch.zeros(n, dtype=torch.bool, device=dev)
        self.has_key, self.reset_next, self.ep_end, self.ep_success = f.clone(), f.clone(), f.clone(), f.clone()
        self.ep_ret, self.last_ret = torch.zeros(n, device=dev), torch.zeros(n, device=dev)
        self._dirs = _DIRS.to(dev)
        self.observation_spec = Composite(
            observation=Bounded(0.0, 1.0, (*B, 4 if dark else 8), dtype=torch.float32, device=dev),
            **episode_stats_spec(B, dev, success=True), shape=B, device=dev)

    def _hard_reset(self, mask):
        for name, loc in self.fixed.items():
            new = self._randint(self.size, self.n, 2) if loc is None else \
                torch.tensor(loc, dtype=torch.int64, device=self.device).expand(self.n, 2)
            setattr(self, name, where_mask(mask, new, getattr(self, name)))
        if self.randomize_actions:
            self.action_perm = where_mask(mask, self._rand(self.n, 5).argsort(-1), self.action_perm)
        self._soft_reset(mask)

    def _soft_reset(self, mask):  # restart the trial in the same room
        self._zero_where(mask, "global_time", "count", "last_ret", "ep_end", "ep_success")
        self._new_attempt(mask)

    def _new_attempt(self, mask):
        self.pos = where_mask(mask, self.start, self.pos)
        self._zero_where(mask, "ep_time", "has_key", "reset_next", "ep_ret")

    def _obs(self):
        s = float(self.size)
        parts = [self.pos.float() / s, self.has_key.float().unsqueeze(-1), (self.ep_time.float() / self.H)[:, None]]
        if not self.dark:
            parts += [self.goal.float() / s, self.key.float() / s]
        return {"observation": torch.cat(parts, -1), **self._episode_stats(self.count)}

    def _advance(self, action):
        self.global_time = self.global_time + 1
        dummy = self.reset_next.clone()
        live = ~dummy
        self._new_attempt(dummy)  # the dummy step: ignore the action, restart the attempt, reward 0
        move = self._dirs[self.action_perm.gather(1, action.unsqueeze(-1)).squeeze(-1)]
        self.ep_time = torch.where(live, self.ep_time + 1, self.ep_time)
        self.pos = torch.where(live.unsqueeze(-1), (self.pos + move).clamp(0, self.size - 1), self.pos)
        door = live & self.has_key & (self.pos == self.goal).all(-1)
        got_key = live & ~self.has_key & (self.pos == self.key).all(-1)
        self.has_key = self.has_key | got_key
        reward = (door | got_key).float()
        end = door | (live & (self.ep_time >= self.H))
        self.ep_ret = self.ep_ret + reward
        self.ep_end, self.ep_success, self.reset_next = end, door, end
        self.last_ret = torch.where(end, self.ep_ret, 0.0)
        self.count = self.count + end.long()
        over = self.global_time >= self.meta_horizon
        return reward, over, over.clone()
