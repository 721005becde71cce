"""Hidden door: a diagnostic k-attempt meta-RL task with an exact Bayes-optimal return per attempt, batched in torch.

Each trial draws one goal door uniformly among ``n_doors``; the trial is ``k_attempts`` attempts on that goal. An
attempt is up to ``picks_per_attempt`` steps, each step picks one door (action = door index): the goal door pays
``goal_reward`` and ends the attempt (success), any other door pays ``-step_penalty``; the attempt also ends
(failure) after ``picks_per_attempt`` picks. Attempts restart with a same-step soft reset inside the env (the
step that ends an attempt returns the next attempt's first observation, its ``attempt_start`` flag set); after
``k_attempts`` attempts the trial is ``terminated`` (never truncated).

Two variants (``reveal``):

- ``reveal=False`` (reward only): the observation is ``[attempt_start, picks_used / picks_per_attempt,
  attempts_done / k_attempts]``; nothing in it tells which door is the goal or which were tried. What the agent
  learned is only in its own past actions and rewards (``prev_action`` / ``prev_reward`` in its context): it has to
  remember which door paid, and which did not, across the soft resets.
- ``reveal=True`` (belief shown): the observation also carries ``tried [n_doors]`` (doors picked in this trial
  that were not the goal) and ``found [n_doors]`` (one-hot of the goal once it was picked in this trial), which is
  the whole Bayes belief: a memoryless policy can be Bayes-optimal. A control for the reward-only variant.

Bayes-optimal return per attempt (:func:`hidden_door_optimal_returns`): the goal is uniform, so an optimal policy
picks doors not yet ruled out (in any order) until it finds the goal, then picks the goal straight away. That one
policy maximises every attempt's expected return at once (no policy can have seen the goal in more than ``a``
distinct doors after ``a`` picks). Let ``N = n_doors``, ``m = picks_per_attempt``, ``G = goal_reward``,
``c = step_penalty`` and ``a = (j - 1) m`` the doors ruled out before attempt ``j`` (1-based) when the goal has not
been found; the goal's rank ``R`` in the search order is uniform on ``1..N``:

- ``R <= a`` (found earlier, ``min(N, a)`` goals): the attempt pays ``G`` in one pick;
- ``a < R <= a + m`` (``s = clip(N - a, 0, m)`` goals): found at pick ``i = R - a``, pays ``G - c (i - 1)``;
- ``R > a + m`` (``f = max(0, N - a - m)`` goals): ``m`` wrong picks, pays ``-c m``.

``E[return_j] = (G min(N, a) + s G - c s (s - 1) / 2 - c m f) / N`` and ``P(success_j) = min(1, j m / N)``. With
one pick per attempt and ``c = 0`` that is ``j / N``; with ``m = N`` (search until found) attempt 1 pays
``G - c (N - 1) / 2`` (the expected number of wrong picks of a uniform search is ``(N - 1) / 2``) and every later
attempt ``G``. The best policy that forgets at every soft reset repeats attempt 1's value on every attempt.

Defaults (5 doors, 3 attempts, 2 picks, ``c = 0``): 0.4, 0.8, 1.0 per attempt (forgetful: 0.4 each; uniformly
random picks: ``1 - (4/5)^2 = 0.36`` each). A trial lasts 3 to ``k m = 6`` steps (``max_trial_steps``).

Bookkeeping keys (see ``envs/transforms.py``): ``episode_end``, ``episode_return``, ``episode_count``,
``episode_success`` (the goal door was picked in that attempt).
"""
from __future__ import annotations

import torch
from torchrl.data import Bounded, Composite

from ..transforms import EPISODE_COUNT_KEY, EPISODE_END_KEY, EPISODE_RETURN_KEY, EPISODE_SUCCESS_KEY, \
    episode_stats_spec
from ._base import BatchedTorchEnv, where_mask


def hidden_door_optimal_returns(n_doors: int = 5, k_attempts: int = 3, picks_per_attempt: int = 2,
                                step_penalty: float = 0.0, goal_reward: float = 1.0) -> list[float]:
    """Exact Bayes-optimal expected return of each attempt (index 0 = the first attempt) of :class:`HiddenDoor`
    with a uniform goal (the closed form of the module docstring; ``picks_per_attempt >= n_doors`` searches until
    found)."""
    N, m, G, c = int(n_doors), int(picks_per_attempt), float(goal_reward), float(step_penalty)
    out = []
    for j in range(1, int(k_attempts) + 1):
        a = (j - 1) * m
        known, s, f = min(N, a), min(max(N - a, 0), m), max(0, N - a - m)
        out.append((G * known + s * G - c * s * (s - 1) / 2 - c * m * f) / N)
    return out


def hidden_door_optimal_success(n_doors: int = 5, k_attempts: int = 3, picks_per_attempt: int = 2) -> list[float]:
    """Bayes-optimal success probability of each attempt (index 0 = the first): ``min(1, j m / N)`` for the
    1-based attempt ``j``."""
    return [min(1.0, j * int(picks_per_attempt) / int(n_doors)) for j in range(1, int(k_attempts) + 1)]


class HiddenDoor(BatchedTorchEnv):
    """Batched hidden-door task (module docstring): find the goal door among ``n_doors`` within
    ``picks_per_attempt`` picks, ``k_attempts`` times per trial on the same goal. ``reveal=False``: the goal is
    learned from rewards only; ``reveal=True``: the observation shows the belief (tried doors, found goal).

    Keys: in ``action`` (one of ``n_doors`` doors); out ``observation`` ``[*B, 3]`` (``[*B, 3 + 2 n_doors]`` with
    ``reveal``) and the bookkeeping keys ``episode_end``, ``episode_return``, ``episode_count``,
    ``episode_success``, with ``reward`` / ``terminated`` / ``truncated`` / ``done`` under ``"next"``. Task key:
    ``goal`` ([*B] int64). ``optimal_returns()`` / ``optimal_success()``: the exact Bayes-optimal value of each
    attempt; ``max_trial_steps``: the longest trial, ``k_attempts * picks_per_attempt``.
    """

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
        """Bayes-optimal expected return of each attempt (index 0 = the first), :func:`hidden_door_optimal_returns`."""
        return hidden_door_optimal_returns(self.n_doors, self.k_attempts, self.picks_per_attempt, self.step_penalty,
                                           self.goal_reward)

    def optimal_success(self) -> list[float]:
        """Bayes-optimal success probability of each attempt, :func:`hidden_door_optimal_success`."""
        return hidden_door_optimal_success(self.n_doors, self.k_attempts, self.picks_per_attempt)

    def _hard_reset(self, mask):
        self.goal = torch.where(mask, self._randint(self.n_doors, self.n), self.goal)
        self._soft_reset(mask)

    def _soft_reset(self, mask):  # restart the whole trial on the same goal (MetaTrial semantics)
        self.k = torch.where(mask, 0, self.k)
        self.picks = torch.where(mask, 0, self.picks)
        self.ep_ret = torch.where(mask, 0.0, self.ep_ret)
        self.last_ret = torch.where(mask, 0.0, self.last_ret)
        self.attempt_start = self.attempt_start | mask
        self.ep_end = self.ep_end & ~mask
        self.ep_success = self.ep_success & ~mask
        self.found = self.found & ~mask
        self.tried = where_mask(mask, torch.zeros_like(self.tried), self.tried)

    def _on_task_set(self, mask):
        self._soft_reset(mask)

    def _obs(self):
        parts = [self.attempt_start.float().unsqueeze(-1), (self.picks.float() / self.picks_per_attempt)[:, None],
                 (self.k.float() / self.k_attempts)[:, None]]
        if self.reveal:
            goal_1h = torch.nn.functional.one_hot(self.goal, self.n_doors).bool() & self.found[:, None]
            parts += [self.tried.float(), goal_1h.float()]
        return {"observation": torch.cat(parts, -1), EPISODE_END_KEY: self.ep_end.unsqueeze(-1),
                EPISODE_RETURN_KEY: self.last_ret.unsqueeze(-1), EPISODE_COUNT_KEY: self.k.unsqueeze(-1),
                EPISODE_SUCCESS_KEY: self.ep_success.unsqueeze(-1)}

    def _advance(self, action):
        hit = action == self.goal
        self.picks = self.picks + 1
        reward = torch.where(hit, self.goal_reward, -self.step_penalty) + 0.0  # + 0.0: no -0.0 rewards
        self.tried = self.tried | (torch.nn.functional.one_hot(action, self.n_doors).bool() & ~hit[:, None])
        self.found = self.found | hit
        self.ep_ret = self.ep_ret + reward
        end = hit | (self.picks >= self.picks_per_attempt)
        self.ep_end, self.ep_success = end, hit
        self.last_ret = torch.where(end, self.ep_ret, 0.0)
        self.k = self.k + end.long()
        self.attempt_start = end
        self.picks = torch.where(end, 0, self.picks)
        self.ep_ret = torch.where(end, 0.0, self.ep_ret)
        terminated = self.k >= self.k_attempts
        return reward, terminated, torch.zeros_like(terminated)
