"""AMAGO's epsilon-greedy exploration as TensorDict modules placed after the policy (docs/api/envs.md): ``eps =
multiplier * (ep_start - (ep_start - ep_end) * time_idx / rollout_horizon)``, both ends annealed over calls."""
from __future__ import annotations

import math
from typing import Callable

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torchrl.data import TensorSpec
from torchrl.envs.utils import ExplorationType, exploration_type

from .. import keys as K
from ..spaces import ActionSpace, action_space_from_spec


class BilevelEpsilonGreedy(TensorDictModuleBase):
    """Epsilon-greedy annealed over training and within each trial. Keys in: ``action``, ``time_idx``, ``is_init``;
    out: ``action`` and ``explored`` ``[.., 1]`` bool. ``schedule_hook(eps, local_step)`` rewrites the epsilon."""

    def __init__(self, action_spec: TensorSpec | ActionSpace, rollout_horizon: float, eps_start_start: float = 1.0,
                 eps_start_end: float = 0.05, eps_end_start: float = 0.8, eps_end_end: float = 0.01,
                 steps_anneal: int = 1_000_000, randomize_eps: bool = True, *, action_key=K.ACTION,
                 time_key=K.TIME_IDX, init_key=K.IS_INIT, explored_key=K.EXPLORED,
                 schedule_hook: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                 seed: int | None = None):
        super().__init__()
        space = action_spec if isinstance(action_spec, ActionSpace) else action_space_from_spec(action_spec)
        if space.kind == "multibinary":
            raise ValueError("epsilon-greedy exploration does not support multi-binary action spaces (as AMAGO); "
                             "use a discrete or continuous action spec")
        if rollout_horizon is None or not rollout_horizon > 0:
            raise ValueError(f"rollout_horizon must be > 0 (math.inf for no within-trial decay), got "
                             f"{rollout_horizon}")
        if steps_anneal < 1:
            raise ValueError(f"steps_anneal must be >= 1, got {steps_anneal}")
        self.space = space
        self.rollout_horizon = float(rollout_horizon)
        self.eps_start_start, self.eps_start_end = float(eps_start_start), float(eps_start_end)
        self.eps_end_start, self.eps_end_end = float(eps_end_start), float(eps_end_end)
        self.steps_anneal, self.randomize_eps = int(steps_anneal), bool(randomize_eps)
        self.action_key, self.time_key, self.init_key, self.explored_key = action_key, time_key, init_key, explored_key
        self.in_keys, self.out_keys = [action_key, time_key, init_key], [action_key, explored_key]
        self.schedule_hook = schedule_hook
        self.register_buffer("global_step", torch.zeros((), dtype=torch.int64))
        self._gen = None if seed is None else torch.Generator().manual_seed(int(seed))
        self._mult: torch.Tensor | None = None  # per-env multiplier, allocated on first use

    def trial_bounds(self, global_step: int | None = None) -> tuple[float, float]:
        """(ep_start, ep_end): epsilon at the start and at the end of a trial for this global step."""
        g = float(self.global_step.item() if global_step is None else global_step)
        anneal = lambda start, end: max(start - (start - end) / self.steps_anneal * g, end)  # noqa: E731
        return anneal(self.eps_start_start, self.eps_start_end), anneal(self.eps_end_start, self.eps_end_end)

    def epsilon(self, local_step: torch.Tensor, multiplier: torch.Tensor | float = 1.0,
                global_step: int | None = None) -> torch.Tensor:
        """Per-env epsilon for ``local_step`` [n] (the schedule, times ``multiplier``, then ``eps_override``)."""
        ep_start, ep_end = self.trial_bounds(global_step)
        local_step = local_step.float()
        frac = local_step / self.rollout_horizon if math.isfinite(self.rollout_horizon) else local_step * 0.0
        eps = multiplier * (ep_start - (ep_start - ep_end) * frac)
        return self.eps_override(eps, local_step)

    def eps_override(self, eps: torch.Tensor, local_step: torch.Tensor) -> torch.Tensor:
        """Hook: rewrite the per-env epsilon (default: ``schedule_hook`` if given, else unchanged)."""
        return eps if self.schedule_hook is None else self.schedule_hook(eps, local_step)

    def _rand(self, shape, device) -> torch.Tensor:
        return torch.rand(shape, generator=self._gen).to(device)

    def _multipliers(self, is_init: torch.Tensor | None, n: int, device) -> torch.Tensor:
        if not self.randomize_eps:
            return torch.ones(n, device=device)
        if self._mult is None or self._mult.numel() != n:
            self._mult = self._rand(n, device)
        elif is_init is not None and is_init.any():
            self._mult = torch.where(is_init, self._rand(n, device), self._mult.to(device))
        return self._mult.to(device)

    def reset_multipliers(self) -> None:
        """Forget the per-env multipliers (they are redrawn at the next call)."""
        self._mult = None

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        if exploration_type() not in (None, ExplorationType.RANDOM):
            return tensordict
        action = tensordict.get(self.action_key, None)
        if action is None:
            raise ValueError(f"{type(self).__name__}: no {self.action_key!r} in the tensordict; put the module "
                             "after the policy")
        t = tensordict.get(self.time_key, None)
        if t is None:
            raise ValueError(f"{type(self).__name__}: no {self.time_key!r} in the tensordict (the local step); "
                             "wrap the env with EpisodeTime / make_amago_env")
        n, dev = max(tensordict.batch_size.numel(), 1), action.device
        local_step = t.reshape(n).to(dev)
        init = tensordict.get(self.init_key, None)
        init = None if init is None else init.reshape(n).to(dev).bool()
        eps = self.epsilon(local_step, self._multipliers(init, n, dev))
        if self.space.discrete:
            replace = self._rand(n, dev) < eps
            idx = torch.randint(self.space.dim, (n,), generator=self._gen).to(dev)
            if self.space.one_hot:  # one-hot by scatter: F.one_hot range-checks its input (a host sync)
                rand_a = torch.zeros((n, self.space.dim), dtype=action.dtype, device=dev).scatter_(
                    -1, idx.unsqueeze(-1), 1).reshape(action.shape)
                new = torch.where(replace.reshape(*action.shape[:-1], 1), rand_a, action)
            else:
                new = torch.where(replace.reshape(action.shape), idx.reshape(action.shape).to(action.dtype), action)
            explored = (new != action).reshape(n, -1).any(-1)  # drawing the policy's own action does not count
        else:
            noise = torch.randn(action.shape, generator=self._gen).to(dev) * eps.reshape(*action.shape[:-1], 1)
            new = (action + noise).clamp(-1.0, 1.0)
            explored = eps > 0
        tensordict.set(self.action_key, new)
        tensordict.set(self.explored_key, explored.reshape(*tensordict.batch_size, 1))
        self.global_step += 1
        return tensordict


class EpsilonGreedy(BilevelEpsilonGreedy):
    """Epsilon annealed over ``steps_anneal`` calls, constant within a trial; keys as :class:`BilevelEpsilonGreedy`."""

    def __init__(self, action_spec: TensorSpec | ActionSpace, eps_start: float = 1.0, eps_end: float = 0.05,
                 steps_anneal: int = 1_000_000, randomize_eps: bool = True, **kwargs):
        super().__init__(action_spec, math.inf, eps_start_start=eps_start, eps_start_end=eps_end,
                         eps_end_start=eps_start, eps_end_end=eps_end, steps_anneal=steps_anneal,
                         randomize_eps=randomize_eps, **kwargs)


class TMazeExploration(EpsilonGreedy):
    """:class:`EpsilonGreedy` with ``0.5 / horizon`` inside the corridor; keys as :class:`BilevelEpsilonGreedy`."""

    def __init__(self, action_spec: TensorSpec | ActionSpace, horizon: int, eps_start: float = 1.0,
                 eps_end: float = 0.01, steps_anneal: int = 100_000, start_window: int = 0, end_window: int = 3,
                 randomize_eps: bool = True, **kwargs):
        super().__init__(action_spec, eps_start=eps_start, eps_end=eps_end, steps_anneal=steps_anneal,
                         randomize_eps=randomize_eps, **kwargs)
        self.horizon, self.start_window, self.end_window = int(horizon), int(start_window), int(end_window)

    def eps_override(self, eps: torch.Tensor, local_step: torch.Tensor) -> torch.Tensor:
        inside = (local_step > self.start_window) & (local_step < self.horizon - self.end_window)
        return super().eps_override(torch.where(inside, torch.full_like(eps, 0.5 / self.horizon), eps), local_step)
