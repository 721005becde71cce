"""Hidden door: a diagnostic k-attempt task with an exact Bayes-optimal return per attempt (docs/api/envs.md)."""
from __future__ import annotations

import torch
from torchrl.data import Bounded, Composite

from ..transforms import episode_stats_spec
from ._base import BatchedTorchEnv


def hidden_door_optimal_returns(n_doors: int = 5, k_attempts: int = 3, picks_per_attempt: int = 2,
                                step_penalty: float = 0.0, goal_reward: float = 1.0) -> list[float]:
    """Exact Bayes-optimal expected return of each attempt (index 0 first) of :class:`HiddenDoor`."""
    N, m, G, c = int(n_doors), int(picks_per_attempt), float(goal_reward), float(step_penalty)
    out = []
    for j in range(1, int(k_attempts) + 1):
        a = (j - 1) * m
        known, s, f = min(N, a), min(max(N - a, 0), m), max(0, N - a - m)
        out.append((G * known + s * G - c * s * (s - 1) / 2 - c * m * f) / N)
    return out


def hidden_door_optimal_success(n_doors: int = 5, k_attempts: int = 3, picks_per_attempt: int = 2) -> list[float]:
    """Bayes-optimal success probability of each attempt (index 0 first): ``min(1, j m / N)``."""
    return [min(1.0, j * int(picks_per_attempt) / int(n_doors)) for j in range(1, int(k_attempts) + 1)]


class HiddenDoor(BatchedTorchEnv):
    """Batched hidden-door task. Keys: in ``action`` (a door); out ``observation`` ``[*B, 3]`` (``+ 2 n_doors`` with
    ``reveal``) and the ``episode_*`` keys. Task key: ``goal``; ``max_trial_steps = k_attempts * picks_per_attempt``."""

    task_keys = ("goal",)

    def __init__(self, num_envs: int | None = 1, n_doors: int = 5, k_attempts: int = 3, picks_per_attempt: int = 2,
                 reveal: bool = False, step_penalty: float = 0.0, goal_reward: float = 1.0, **kw):
        if n_doors < 2 or k_attempts < 1 or picks_per_attempt < 1:
            raise ValueError(f"n_doors must be >= 2, k_attempts and picks_per_attempt >= 1, got n_doors={n_doors}, "
                             f"k_attempts={k_attempts}, picks_per_attempt={picks_per_attempt}")
        if goal_reward <= 0 or step_penalty < 0:
            raise ValueError(f"goal_reward must be > 0 and step_penalty >= 0, got {goal_reward}, {step_penalty}")
        self.n_actions = int(n_doors)
        self.n_doors, self.k_attempts, self.picks_per_attempt = int(n_doors), int(k_attempts), int(picks_per_attempt)
        self.reveal, self.step_penalty, self.goal_reward = bool(reveal), float(step_penalty), float(goal_reward)
        self.max_trial_steps = self.k_attempts * self.picks_per_attempt
        super().__init__(num_envs, **kw)
        n, dev, B, N = self.n, self.device, self.batch_size, self.n_doors
        z = torch.zeros(n, dtype=torch.int64, device=dev)
        f = torch.zeros(n, dtype=torch.bool, device=dev)
        self.goal, self.k, self.picks = z.clone(), z.clone(), z.clone()
        self.ep_ret, self.last_ret = torch.zeros(n, device=dev), torch.zeros(n, device=dev)
        self.attempt_start, self.ep_end, self.ep_success, self.found = ~f, f.clone(), f.clone(), f.clone()
        self.tried = torch.zeros(n, N, dtype=torch.bool, device=dev)
        dim = 3 + (2 * N if self.reveal else 0)
        self.observation_spec = Composite(observation=Bounded(0.0, 1.0, (*B, dim), dtype=torch.float32, device=dev),
                                          **episode_stats_spec(B, dev, success=True), shape=B, device=dev)

    def optimal_returns(self) -> list[float]:
        """:func:`hidden_door_optimal_returns` of this env."""
        return hidden_door_optimal_returns(self.n_doors, self.k_attempts, self.picks_per_attempt, self.step_penalty,
                                           self.goal_reward)

    def optimal_success(self) -> list[float]:
        """:func:`hidden_door_optimal_success` of this env."""
        return hidden_door_optimal_success(self.n_doors, self.k_attempts, self.picks_per_attempt)

    def _hard_reset(self, mask):
        self.goal = torch.where(mask, self._randint(self.n_doors, self.n), self.goal)
        self._soft_reset(mask)

    def _soft_reset(self, mask):  # restart the trial on the same goal
        self._zero_where(mask, "k", "picks", "ep_ret", "last_ret", "ep_end", "ep_success", "found", "tried")
        self.attempt_start = self.attempt_start | mask

    def _obs(self):
        parts = [self.attempt_start.float().unsqueeze(-1), (self.picks.float() / self.picks_per_attempt)[:, None],
                 (self.k.float() / self.k_attempts)[:, None]]
        if self.reveal:
            goal_1h = torch.nn.functional.one_hot(self.goal, self.n_doors).bool() & self.found[:, None]
            parts += [self.tried.float(), goal_1h.float()]
        return {"observation": torch.cat(parts, -1), **self._episode_stats(self.k)}

    def _advance(self, action):
        hit = action == self.goal
        self.picks = self.picks + 1
        reward = torch.where(hit, self.goal_reward, -self.step_penalty) + 0.0  # + 0.0: no -0.0 rewards
        self.tried = self.tried | (torch.nn.functional.one_hot(action, self.n_doors).bool() & ~hit[:, None])
        self.found = self.found | hit
        self.ep_ret = self.ep_ret + reward
        end = hit | (self.picks >= self.picks_per_attempt)
        self.ep_end, self.ep_success, self.attempt_start = end, hit, end
        self.last_ret = torch.where(end, self.ep_ret, 0.0)
        self.k = self.k + end.long()
        self._zero_where(end, "picks", "ep_ret")
        terminated = self.k >= self.k_attempts
        return reward, terminated, torch.zeros_like(terminated)
