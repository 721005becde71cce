"""Shared machinery of the batched pure-torch builtin envs.

Every builtin env keeps its state as tensors with a leading env axis of size ``n`` (``num_envs``, or 1 when the
env is unbatched) and steps all sub-envs with tensor ops, so thousands of envs run in one process without IPC.
This base class owns what they have in common: batch-size handling (batched ``[N]`` or unbatched ``[]``), the
discrete action spec (one-hot or index), done specs, the seeded ``torch.Generator``, the partial-reset mask, and
the *task* protocol (``get_task()`` / ``reset(task=...)``) used by tests and hindsight relabeling to replay an env
on a fixed task.
"""
from __future__ import annotations

import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.data import Categorical, Composite, OneHot, Unbounded
from torchrl.envs import EnvBase


class BatchedTorchEnv(EnvBase):
    """Base class: subclasses implement ``_hard_reset(mask)``, ``_obs()`` and ``_advance(action_index)``.

    ``num_envs=None`` builds an unbatched env (batch size ``[]``); the state still has a leading axis of size 1.
    ``categorical_action_encoding=False`` (the default, like TorchRL's ``GymEnv``) exposes a ``OneHot`` int64
    action spec; ``True`` exposes a ``Categorical`` int64 index spec.

    Keys: in ``action``; out the subclass's observation keys at the root (reset) and under ``"next"`` with
    ``("next", "reward")``, ``("next", "terminated")``, ``("next", "truncated")`` and ``("next", "done")``.
    """

    batch_locked = True
    n_actions: int = 0
    # task entries (name -> per-env shape suffix, dtype) accepted by reset(task=...) and returned by get_task()
    task_keys: tuple[str, ...] = ()
    # MetaTrial passes soft_reset=True on its partial resets; these envs keep their task in that case
    supports_soft_reset = True

    def __init__(self, num_envs: int | None, *, categorical_action_encoding: bool = False, device="cpu",
                 seed: int | None = None):
        if num_envs is not None and (not isinstance(num_envs, int) or num_envs < 1):
            raise ValueError(f"num_envs must be a positive int or None (unbatched), got {num_envs!r}")
        batch = torch.Size([]) if num_envs is None else torch.Size([num_envs])
        super().__init__(device=device, batch_size=batch)
        self.n = 1 if num_envs is None else num_envs
        self.categorical_action_encoding = bool(categorical_action_encoding)
        self.rng = torch.Generator(device=self.device)
        self.rng.manual_seed(int(torch.empty((), dtype=torch.int64).random_().item()) if seed is None else seed)
        B = self.batch_size
        if self.categorical_action_encoding:
            self.action_spec = Categorical(self.n_actions, shape=B, dtype=torch.int64, device=self.device)
        else:
            self.action_spec = OneHot(self.n_actions, shape=(*B, self.n_actions), dtype=torch.int64,
                                      device=self.device)
        self.reward_spec = Unbounded((*B, 1), dtype=torch.float32, device=self.device)
        self.done_spec = Composite(
            {k: Categorical(2, (*B, 1), dtype=torch.bool, device=self.device)
             for k in ("done", "terminated", "truncated")}, shape=B, device=self.device)

    # ---- helpers for subclasses -------------------------------------------------------------------------
    def _rand(self, *shape) -> torch.Tensor:
        return torch.rand(shape, generator=self.rng, device=self.device)

    def _randint(self, high, *shape) -> torch.Tensor:
        return torch.randint(int(high), shape, generator=self.rng, device=self.device)

    def _out(self, x: torch.Tensor) -> torch.Tensor:
        """Internal [n, ...] -> external [*batch_size, ...]."""
        return x if self.batch_size else x[0]

    def _flag(self, x: torch.Tensor) -> torch.Tensor:
        """Internal [n] bool -> external [*batch_size, 1]."""
        return self._out(x.reshape(self.n, 1))

    def _action_index(self, td: TensorDictBase) -> torch.Tensor:
        a = td.get("action")
        if self.categorical_action_encoding:
            idx = a.reshape(self.n).long()
            if ((idx < 0) | (idx >= self.n_actions)).any():
                raise ValueError(f"'action' index out of range [0, {self.n_actions})")
        else:  # argmax of a one-hot row is always in range: no check (it would cost a host sync per step)
            if a.shape[-1] != self.n_actions:
                raise ValueError(f"one-hot 'action' must end in {self.n_actions}, got shape {tuple(a.shape)}")
            idx = a.reshape(self.n, self.n_actions).long().argmax(-1)
        return idx.to(self.device)

    def _reset_mask(self, td: TensorDictBase | None) -> torch.Tensor:
        if td is None or "_reset" not in td.keys():
            return torch.ones(self.n, dtype=torch.bool, device=self.device)
        return td.get("_reset").reshape(self.n).to(self.device)

    # ---- task protocol ------------------------------------------------------------------------------------
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
            m = mask.view(self.n, *([1] * (cur.ndim - 1)))
            setattr(self, k, torch.where(m, v, cur))

    # ---- EnvBase API -------------------------------------------------------------------------------------
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
        return self._make_td(self._obs(), None)

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        reward, terminated, truncated = self._advance(self._action_index(tensordict))
        flags = {"terminated": self._flag(terminated), "truncated": self._flag(truncated),
                 "done": self._flag(terminated | truncated)}
        return self._make_td(self._obs(), reward, flags)

    def _make_td(self, obs: dict, reward, extra: dict | None = None) -> TensorDict:
        data = {k: self._out(v) for k, v in obs.items()}
        if reward is not None:
            data["reward"] = self._out(reward.reshape(self.n, 1).float())
        if extra:
            data.update(extra)
        return TensorDict(data, batch_size=self.batch_size, device=self.device)

    def _set_seed(self, seed: int | None):
        self.rng.manual_seed(int(seed) if seed is not None else 0)

    # ---- subclass hooks ------------------------------------------------------------------------------------
    def _hard_reset(self, mask: torch.Tensor) -> None:  # draw a new task where mask, then start a trial
        raise NotImplementedError

    def _soft_reset(self, mask: torch.Tensor) -> None:  # new attempt on the same task (default: full restart)
        raise NotImplementedError

    def _on_task_set(self, mask: torch.Tensor) -> None:  # recompute derived state after reset(task=...)
        pass

    def _obs(self) -> dict:
        raise NotImplementedError

    def _advance(self, action: torch.Tensor):
        """Step every sub-env with action indices [n]; return (reward [n], terminated [n], truncated [n])."""
        raise NotImplementedError


def where_mask(mask: torch.Tensor, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    """torch.where with a [n] mask broadcast over trailing dims."""
    return torch.where(mask.view(mask.shape[0], *([1] * (old.ndim - 1))), new, old)
