"""Shared machinery of the batched pure-torch builtin envs: specs, seeding, partial resets, the task protocol."""
from __future__ import annotations

import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.data import Categorical, Composite, OneHot, Unbounded
from torchrl.envs import EnvBase

from ... import keys as K


class BatchedTorchEnv(EnvBase):
    """Base class: subclasses implement ``_hard_reset(mask)``, ``_obs()`` and ``_advance(action_index)``.
    Keys: in ``action``; out the observation keys, ``reward``, ``done`` (docs/api/envs.md)."""

    batch_locked = True
    n_actions: int = 0
    task_keys: tuple[str, ...] = ()  # state attributes accepted by reset(task=...) and returned by get_task()
    supports_soft_reset = True

    def __init__(self, num_envs: int | None, *, categorical_action_encoding: bool = False, device="cpu",
                 seed: int | None = None):
        if num_envs is not None and (not isinstance(num_envs, int) or num_envs < 1):
            raise ValueError(f"num_envs must be a positive int or None (unbatched), got {num_envs!r}")
        super().__init__(device=device, batch_size=torch.Size([] if num_envs is None else [num_envs]))
        self.n = 1 if num_envs is None else num_envs
        self.categorical_action_encoding = bool(categorical_action_encoding)
        self.rng = torch.Generator(device=self.device)
        self.rng.manual_seed(int(torch.empty((), dtype=torch.int64).random_().item()) if seed is None else seed)
        B = self.batch_size
        if self.categorical_action_encoding:
            self.action_spec = Categorical(self.n_actions, shape=B, dtype=torch.int64, device=self.device)
        else:
            self.action_spec = OneHot(self.n_actions, shape=(*B, self.n_actions), dtype=torch.int64, device=self.device)
        self.reward_spec = Unbounded((*B, 1), dtype=torch.float32, device=self.device)
        self.done_spec = Composite({k: Categorical(2, (*B, 1), dtype=torch.bool, device=self.device)
                                    for k in ("done", "terminated", "truncated")}, shape=B, device=self.device)

    def _rand(self, *shape) -> torch.Tensor:
        return torch.rand(shape, generator=self.rng, device=self.device)

    def _randint(self, high, *shape) -> torch.Tensor:
        return torch.randint(int(high), shape, generator=self.rng, device=self.device)

    def _zero_where(self, mask: torch.Tensor, *names: str) -> None:
        """Zero the [n, ...] state attributes ``names`` where the [n] ``mask`` is set."""
        for k in names:
            x = getattr(self, k)
            setattr(self, k, where_mask(mask, x.new_zeros(()), x))

    def _out(self, x: torch.Tensor) -> torch.Tensor:
        """Internal [n, ...] -> external [*batch_size, ...]."""
        return x if self.batch_size else x[0]

    def _flag(self, x: torch.Tensor) -> torch.Tensor:
        """Internal [n] bool -> external [*batch_size, 1]."""
        return self._out(x.reshape(self.n, 1))

    def _episode_stats(self, count: torch.Tensor) -> dict:
        """The ``episode_*`` entries of a multi-episode env from its ``ep_end``, ``last_ret``, ``ep_success``."""
        return {K.EPISODE_END: self.ep_end.unsqueeze(-1), K.EPISODE_RETURN: self.last_ret.unsqueeze(-1),
                K.EPISODE_COUNT: count.unsqueeze(-1), K.EPISODE_SUCCESS: self.ep_success.unsqueeze(-1)}

    def _action_index(self, td: TensorDictBase) -> torch.Tensor:
        a = td.get("action")
        if self.categorical_action_encoding:
            idx = a.reshape(self.n).long()
            if ((idx < 0) | (idx >= self.n_actions)).any():
                raise ValueError(f"'action' index out of range [0, {self.n_actions})")
        else:  # argmax is always in range: no check (a host sync)
            if a.shape[-1] != self.n_actions:
                raise ValueError(f"one-hot 'action' must end in {self.n_actions}, got shape {tuple(a.shape)}")
            idx = a.reshape(self.n, self.n_actions).long().argmax(-1)
        return idx.to(self.device)

    def _reset_mask(self, td: TensorDictBase | None) -> torch.Tensor:
        if td is None or "_reset" not in td.keys():
            return torch.ones(self.n, dtype=torch.bool, device=self.device)
        return td.get("_reset").reshape(self.n).to(self.device)

    def get_task(self) -> TensorDict:
        """The current task of every sub-env (a copy), e.g. to replay a trial with ``reset(task=...)``."""
        return TensorDict({k: self._out(getattr(self, k)).clone() for k in self.task_keys},
                          batch_size=self.batch_size, device=self.device)

    def _apply_task(self, task, mask: torch.Tensor) -> None:
        if not isinstance(task, (TensorDictBase, dict)):
            raise ValueError(f"task must be a TensorDict or dict with keys {self.task_keys}, got {type(task)}")
        for k, v in task.items():
            if k not in self.task_keys:
                raise ValueError(f"unknown task key {k!r}; {type(self).__name__} accepts {self.task_keys}")
            cur = getattr(self, k)
            v = torch.as_tensor(v, device=self.device).to(cur.dtype).reshape(self.n, *cur.shape[1:])
            setattr(self, k, where_mask(mask, v, cur))

    def _reset(self, tensordict: TensorDictBase | None = None, *, soft_reset: bool = False, task=None,
               **kwargs) -> TensorDictBase:
        mask = self._reset_mask(tensordict)
        if soft_reset:
            self._soft_reset(mask)
        else:
            self._hard_reset(mask)
            if task is not None:
                self._apply_task(task, mask)
                self._on_task_set(mask)
        return self._make_td()

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        reward, term, trunc = self._advance(self._action_index(tensordict))
        return self._make_td({"reward": self._out(reward.reshape(self.n, 1).float()), "terminated": self._flag(term),
                              "truncated": self._flag(trunc), "done": self._flag(term | trunc)})

    def _make_td(self, extra: dict | None = None) -> TensorDict:
        data = {k: self._out(v) for k, v in self._obs().items()}
        return TensorDict({**data, **(extra or {})}, batch_size=self.batch_size, device=self.device)

    def _set_seed(self, seed: int | None):
        self.rng.manual_seed(int(seed) if seed is not None else 0)

    def close(self, *, raise_if_closed: bool = True):
        for envs in getattr(self, "_envs", ()):  # subclasses' per-slot dicts of Python sub-envs
            for env in envs.values():
                env.close()
            envs.clear()
        return super().close(raise_if_closed=raise_if_closed)

    def _hard_reset(self, mask: torch.Tensor) -> None:  # draw a new task where mask, then start a trial
        raise NotImplementedError

    def _soft_reset(self, mask: torch.Tensor) -> None:  # new attempt on the same task; also ends reset(task=...)
        raise NotImplementedError

    def _on_task_set(self, mask: torch.Tensor) -> None:  # after reset(task=...): restart the trial on the new task
        self._soft_reset(mask)

    def _obs(self) -> dict:
        raise NotImplementedError

    def _advance(self, action: torch.Tensor):
        """Step every sub-env with action indices [n]; return (reward [n], terminated [n], truncated [n])."""
        raise NotImplementedError


def where_mask(mask: torch.Tensor, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    """torch.where with a [n] mask broadcast over trailing dims."""
    return torch.where(mask.view(mask.shape[0], *([1] * (old.ndim - 1))), new, old)


class HostAttemptsEnv(BatchedTorchEnv):
    """A :class:`BatchedTorchEnv` of Python sub-envs, ``attempts`` attempts per trial restarted with a dummy step.
    Subclasses call ``_init_attempts(attempts)`` and implement ``_start_attempt(i)``, ``_show(i, obs)`` and
    ``_slot_step(i, action) -> (obs, reward, ended, success, terminal)``."""

    def _init_attempts(self, attempts: int) -> None:
        n = self.n
        self.attempts = attempts
        self._count = np.zeros(n, dtype=np.int64)  # attempts finished in this trial
        self._pending = np.zeros(n, dtype=bool)  # the next step is the dummy (restart) step
        self._ep_ret = np.zeros(n, dtype=np.float64)
        self._ep_end, self._ep_success = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
        self._last_ret = np.zeros(n, dtype=np.float32)

    def _soft_reset(self, mask):  # restart the trial on the same task
        for i in mask.nonzero().squeeze(-1).tolist():
            self._count[i], self._last_ret[i] = 0, 0.0
            self._pending[i] = self._ep_end[i] = self._ep_success[i] = False
            self._start_attempt(i)

    def _attempt_stats(self, success: bool) -> dict:
        t = lambda x: torch.from_numpy(x.copy()).to(self.device).unsqueeze(-1)  # noqa: E731
        out = {K.EPISODE_END: t(self._ep_end), K.EPISODE_RETURN: t(self._last_ret), K.EPISODE_COUNT: t(self._count)}
        return {**out, K.EPISODE_SUCCESS: t(self._ep_success)} if success else out

    def _advance(self, action):
        n = self.n
        reward = np.zeros(n, dtype=np.float32)
        terminated, truncated = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
        self._ep_end[:] = self._ep_success[:] = False
        self._last_ret[:] = 0.0
        for i, a in enumerate(action.cpu().tolist()):
            if self._pending[i]:  # dummy step: the action is ignored, the next attempt starts
                self._pending[i] = False
                self._start_attempt(i)
                continue
            obs, r, ended, success, terminal = self._slot_step(i, a)
            reward[i] = r
            self._ep_ret[i] += r
            if ended:
                self._count[i] += 1
                self._ep_end[i], self._ep_success[i], self._last_ret[i] = True, success, self._ep_ret[i]
                if self._count[i] >= self.attempts:
                    terminated[i], truncated[i] = terminal, not terminal
                else:
                    self._pending[i] = True
            self._show(i, obs)
        return tuple(torch.from_numpy(x).to(self.device) for x in (reward, terminated, truncated))
