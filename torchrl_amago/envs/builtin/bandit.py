"""Bernoulli bandit trials (the RL² setting): a diagnostic with noisy payoffs and an exact Bayes-optimal return per
pull, from a belief DP over the arms' Beta posteriors (docs/api/envs.md)."""
from __future__ import annotations

import torch
from torchrl.data import Bounded, Composite

from ..transforms import episode_stats_spec
from ._base import BatchedTorchEnv

Belief = tuple[tuple[int, int], ...]  # (successes, failures) of each arm, sorted: arms are exchangeable


class BanditBelief:
    """Exact Bayes-optimal values of a ``n_arms``-armed Bernoulli bandit of ``n_pulls`` pulls whose arm
    probabilities are drawn uniformly from [0, 1] (Beta(1, 1) priors): a finite-horizon DP over the posteriors.
    Cost: one value per reachable sorted belief (5 arms: 3,519 at 10 pulls, 347,846 at 20)."""

    def __init__(self, n_arms: int = 5, n_pulls: int = 10):
        if n_arms < 2 or n_pulls < 1:
            raise ValueError(f"n_arms must be >= 2 and n_pulls >= 1, got n_arms={n_arms}, n_pulls={n_pulls}")
        self.n_arms, self.n_pulls = int(n_arms), int(n_pulls)
        self._values: dict[Belief, float] = {}

    @property
    def start(self) -> Belief:
        return ((0, 0),) * self.n_arms

    def value(self, belief: Belief) -> float:
        """Optimal expected reward of the pulls left after ``belief`` (sorted ``(s, f)`` pairs)."""
        stack = [belief]
        while stack:  # iterative post-order: no recursion limit at long horizons
            b = stack[-1]
            if b in self._values:
                stack.pop()
                continue
            if sum(s + f for s, f in b) >= self.n_pulls:
                self._values[b] = 0.0
                stack.pop()
                continue
            todo = [c for i in _distinct(b) for c in _children(b, i) if c not in self._values]
            if todo:
                stack.extend(todo)
                continue
            self._values[b] = max(self._q(b, i) for i in _distinct(b))
            stack.pop()
        return self._values[belief]

    def _q(self, b: Belief, i: int) -> float:
        s, f = b[i]
        p = (s + 1) / (s + f + 2)
        win, loss = _children(b, i)
        return p * (1.0 + self.value(win)) + (1 - p) * self.value(loss)

    def action_values(self, successes, failures) -> list[float]:
        """Bayes-optimal expected reward of the remaining pulls after pulling each arm now, then acting optimally,
        given each arm's ``successes`` and ``failures`` so far (sequences of ``n_arms`` ints)."""
        pairs = [(int(s), int(f)) for s, f in zip(successes, failures)]
        if len(pairs) != self.n_arms or sum(s + f for s, f in pairs) >= self.n_pulls:
            raise ValueError(f"need {self.n_arms} (successes, failures) pairs with fewer than {self.n_pulls} pulls in "
                             f"all, got {pairs}")
        b = tuple(sorted(pairs))
        return [self._q(b, b.index(pair)) for pair in pairs]

    def optimal_returns(self) -> list[float]:
        """Expected reward of each pull (index 0 first) under the Bayes-optimal policy that breaks ties by the
        lowest sorted arm; they add up to ``value(start)``, the optimal return of a trial."""
        dist, out = {self.start: 1.0}, []
        for _ in range(self.n_pulls):
            nxt: dict[Belief, float] = {}
            reward = 0.0
            for b, w in dist.items():
                q = {i: self._q(b, i) for i in _distinct(b)}
                i = next(i for i in q if q[i] >= max(q.values()) - 1e-12)
                s, f = b[i]
                p = (s + 1) / (s + f + 2)
                reward += w * p
                win, loss = _children(b, i)
                nxt[win] = nxt.get(win, 0.0) + w * p
                nxt[loss] = nxt.get(loss, 0.0) + w * (1 - p)
            out.append(reward)
            dist = nxt
        return out


def _distinct(b: Belief) -> list[int]:
    """Index of the first arm of each distinct (s, f) pair (equal pairs are equal choices)."""
    return [i for i in range(len(b)) if i == 0 or b[i] != b[i - 1]]


def _children(b: Belief, i: int) -> tuple[Belief, Belief]:
    s, f = b[i]
    rest = b[:i] + b[i + 1:]
    return tuple(sorted(rest + ((s + 1, f),))), tuple(sorted(rest + ((s, f + 1),)))


def bandit_optimal_returns(n_arms: int = 5, n_pulls: int = 10) -> list[float]:
    """Exact Bayes-optimal expected reward of each pull of :class:`BernoulliBandit` (:class:`BanditBelief`)."""
    return BanditBelief(n_arms, n_pulls).optimal_returns()


class BernoulliBandit(BatchedTorchEnv):
    """Batched Bernoulli bandit: each trial draws the arms' pay probabilities uniformly from [0, 1], then gives
    ``n_pulls`` pulls; an attempt is ``pulls_per_attempt`` pulls. Keys: in ``action`` (an arm); out ``observation``
    ``[*B, 1]`` (the share of the trial's pulls made) and the ``episode_*`` keys. Task key: ``probs``."""

    task_keys = ("probs",)

    def __init__(self, num_envs: int | None = 1, n_arms: int = 5, n_pulls: int = 10, pulls_per_attempt: int = 1,
                 **kw):
        if n_arms < 2 or n_pulls < 1 or pulls_per_attempt < 1 or n_pulls % pulls_per_attempt:
            raise ValueError(f"n_arms must be >= 2, n_pulls >= 1 and a multiple of pulls_per_attempt >= 1, got "
                             f"n_arms={n_arms}, n_pulls={n_pulls}, pulls_per_attempt={pulls_per_attempt}")
        self.n_actions = self.n_arms = int(n_arms)
        self.n_pulls, self.pulls_per_attempt = int(n_pulls), int(pulls_per_attempt)
        self.k_attempts, self.max_trial_steps = self.n_pulls // self.pulls_per_attempt, self.n_pulls
        super().__init__(num_envs, **kw)
        n, dev, B = self.n, self.device, self.batch_size
        self.probs = torch.zeros(n, self.n_arms, device=dev)
        self.t, self.k = torch.zeros(n, dtype=torch.int64, device=dev), torch.zeros(n, dtype=torch.int64, device=dev)
        self.ep_ret, self.last_ret = torch.zeros(n, device=dev), torch.zeros(n, device=dev)
        self.ep_end = torch.zeros(n, dtype=torch.bool, device=dev)
        self.ep_success = self.ep_end.clone()
        self.observation_spec = Composite(observation=Bounded(0.0, 1.0, (*B, 1), dtype=torch.float32, device=dev),
                                          **episode_stats_spec(B, dev, success=True), shape=B, device=dev)

    def optimal_returns(self) -> list[float]:
        """Bayes-optimal expected return of each attempt (:class:`BanditBelief`, pulls summed per attempt)."""
        per_pull = bandit_optimal_returns(self.n_arms, self.n_pulls)
        m = self.pulls_per_attempt
        return [sum(per_pull[j * m:(j + 1) * m]) for j in range(self.k_attempts)]

    def _hard_reset(self, mask):
        self.probs = torch.where(mask[:, None], self._rand(self.n, self.n_arms), self.probs)
        self._soft_reset(mask)

    def _soft_reset(self, mask):  # restart the trial on the same arms
        self._zero_where(mask, "t", "k", "ep_ret", "last_ret", "ep_end", "ep_success")

    def _obs(self):
        return {"observation": (self.t.float() / self.n_pulls)[:, None], **self._episode_stats(self.k)}

    def _advance(self, action):
        p = self.probs.gather(-1, action[:, None]).squeeze(-1)
        reward = (self._rand(self.n) < p).float()
        self.t = self.t + 1
        self.ep_ret = self.ep_ret + reward
        end = self.t % self.pulls_per_attempt == 0
        self.ep_end, self.ep_success = end, end & (self.ep_ret > 0)
        self.last_ret = torch.where(end, self.ep_ret, 0.0)
        self.k = self.k + end.long()
        self._zero_where(end, "ep_ret")
        terminated = self.t >= self.n_pulls
        return reward, terminated, torch.zeros_like(terminated)
