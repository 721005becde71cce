"""The acting policy for TorchRL collectors: timestep encoder -> trajectory encoder in step mode (per-env state
it owns, cleared where `is_init`) -> actor head -> action in the env's encoding."""
from __future__ import annotations

from typing import Any

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from tensordict.nn.probabilistic import InteractionType, interaction_type
from torch import nn

from ..spaces import ActionSpace
from .trajectory.base import TrajectoryEncoder

_DETERMINISTIC = (InteractionType.DETERMINISTIC, InteractionType.MODE, InteractionType.MEAN, InteractionType.MEDIAN)


def acting_is_deterministic() -> bool:
    """True under set_exploration_type(DETERMINISTIC / MODE / MEAN / MEDIAN); RANDOM or unset -> sample."""
    return interaction_type() in _DETERMINISTIC


class AMAGOPolicy(TensorDictModuleBase):
    """Collector policy on envs with batch [N] (or unbatched, treated as N=1; or any batch shape, flattened).

    Reads the timestep encoder's in_keys plus `time_key` ([N, 1] int64) and `init_key` ([N, 1] bool); writes
    `action_key` (one-hot bool for OneHot envs, int64 index for Categorical, float [N, A] in [-1, 1] for
    continuous, float 0/1 for multi-binary). The per-env recurrent state lives on the policy (not in the
    tensordict), so it is neither stored by the collector nor part of `state_dict()`.

    `eval_when_acting=True` runs the submodules in eval mode during `forward` (no dropout, no InputNorm
    statistic updates, no σ-reparam power iteration) and restores their modes afterwards, because the
    modules are shared with the loss, which keeps them in train mode."""

    def __init__(self, timestep_encoder: nn.Module, trajectory_encoder: TrajectoryEncoder, actor_head: nn.Module,
                 action_space: ActionSpace, *, time_key="time_idx", init_key="is_init", action_key="action",
                 eval_when_acting: bool = True, deterministic: bool | None = None):
        super().__init__()
        if not isinstance(action_space, ActionSpace):
            raise ValueError(f"action_space must be a torchrl_amago.spaces.ActionSpace, got {type(action_space).__name__}")
        if not isinstance(trajectory_encoder, TrajectoryEncoder):
            raise ValueError("trajectory_encoder must be a TrajectoryEncoder (step mode API), got "
                             f"{type(trajectory_encoder).__name__}")
        self.timestep_encoder = timestep_encoder
        self.trajectory_encoder = trajectory_encoder
        self.actor_head = actor_head
        # plain attributes (not submodules / buffers): the state_dict is exactly the three submodules
        self.action_space = action_space
        self.time_key, self.init_key, self.action_key = time_key, init_key, action_key
        self.eval_when_acting = eval_when_acting
        # None: follow the exploration type; True/False: always argmax-or-mean / always sample (e.g. the T-Maze
        # example acts greedily during training while an exploration module adds epsilon-greedy noise)
        self.deterministic = deterministic
        tin = list(getattr(timestep_encoder, "in_keys", None) or [])
        if not tin:
            raise ValueError("timestep_encoder must be a TensorDict module with in_keys (e.g. MLPTimestepEncoder)")
        self._tstep_in_keys = tin
        tout = list(getattr(timestep_encoder, "out_keys", ["tstep_emb"]))
        if len(tout) != 1:
            raise ValueError(f"timestep_encoder must have exactly one out_key, got {tout}")
        self._tstep_key = tout[0]
        self.in_keys = tin + [time_key, init_key]
        self.out_keys = [action_key]
        self._state: Any = None
        self._state_n: int | None = None
        self._mode_cache: tuple | None = None  # (ids of the 3 submodules, flat module list or None)

    # ------------------------------------------------------------------ state
    def reset_state(self) -> None:
        """Forget every env's context (the next call allocates a fresh state)."""
        self._state, self._state_n = None, None
        self._mode_cache = None

    def fresh_copy(self) -> "AMAGOPolicy":
        """A policy sharing the same modules (weights) but with its own, empty state (e.g. for eval envs)."""
        return AMAGOPolicy(self.timestep_encoder, self.trajectory_encoder, self.actor_head, self.action_space,
                           time_key=self.time_key, init_key=self.init_key, action_key=self.action_key,
                           eval_when_acting=self.eval_when_acting, deterministic=self.deterministic)

    @property
    def state(self) -> Any:
        return self._state

    # ------------------------------------------------------------------ acting
    def _get(self, td: TensorDictBase, key, hint: str) -> torch.Tensor:
        val = td.get(key, None)
        if val is None:
            raise KeyError(f"AMAGOPolicy: key {key!r} is missing from the env output ({hint})")
        return val

    def _training_submodules(self) -> list[nn.Module]:
        # top-level flags only: `.train()` / `.eval()` recurse, so a submodule in eval mode has eval children
        return [m for m in (self.timestep_encoder, self.trajectory_encoder, self.actor_head) if m.training]

    def _flat_modules(self) -> list[nn.Module] | None:
        """Every module under the three submodules, cached, or None if one of them overrides `train()` (then
        modes are switched with `.train()`). Switching modes by flipping the flags of a cached list costs a few
        microseconds per step instead of a recursive `.train()` walk (~1 ms for a 2-layer Transformer).
        The cache is keyed on the submodules' identity and dropped by `reset_state()`."""
        roots = (self.timestep_encoder, self.trajectory_encoder, self.actor_head)
        key = tuple(id(m) for m in roots)
        if self._mode_cache is None or self._mode_cache[0] != key:
            mods = [m for r in roots for m in r.modules()]
            plain = all(type(m).train is nn.Module.train for m in mods)
            self._mode_cache = (key, mods if plain else None)
        return self._mode_cache[1]

    @torch.no_grad()
    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        shape = tensordict.batch_size
        flat = tensordict.reshape(-1) if len(shape) != 1 else tensordict
        n = flat.batch_size[0]
        time_idx = self._get(flat, self.time_key, "add the EpisodeTime transform").reshape(n, -1)
        is_init = self._get(flat, self.init_key, "add TorchRL's InitTracker transform").reshape(n, -1)
        if time_idx.shape[-1] != 1 or is_init.shape[-1] != 1:
            raise ValueError(f"{self.time_key!r} and {self.init_key!r} must be [N, 1] per env, got "
                             f"{tuple(time_idx.shape)} and {tuple(is_init.shape)}")
        time_idx, is_init = time_idx.squeeze(-1), is_init.squeeze(-1).bool()
        if not self.eval_when_acting:
            action = self._act(flat, time_idx, is_init, n)
        elif (mods := self._flat_modules()) is not None:
            flags = [m.training for m in mods]
            if any(flags):
                for m in mods:
                    object.__setattr__(m, "training", False)
            try:
                action = self._act(flat, time_idx, is_init, n)
            finally:
                if any(flags):
                    for m, f in zip(mods, flags):
                        object.__setattr__(m, "training", f)
        else:
            to_restore = self._training_submodules()
            for m in to_restore:
                m.train(False)
            try:
                action = self._act(flat, time_idx, is_init, n)
            finally:
                for m in to_restore:
                    m.train(True)
        tensordict.set(self.action_key, action.reshape((*shape, *action.shape[1:])))
        return tensordict

    def _act(self, flat: TensorDictBase, time_idx: torch.Tensor, is_init: torch.Tensor, n: int) -> torch.Tensor:
        sub = flat.select(*self._tstep_in_keys, strict=False)  # keeps tstep_emb out of the env data
        tstep = self.timestep_encoder(sub).get(self._tstep_key)
        if self._state is None or self._state_n != n:
            self._state = self.trajectory_encoder.init_state(n, tstep.device)
            self._state_n = n
        self._state = self.trajectory_encoder.reset_state(self._state, is_init.to(tstep.device))
        state_emb, self._state = self.trajectory_encoder.step(tstep, time_idx.to(tstep.device), self._state)
        params = self.actor_head(state_emb)
        action = self.actor_head.act(
            params, acting_is_deterministic() if self.deterministic is None else self.deterministic)
        if self.action_space.discrete:
            if self.action_space.one_hot:  # == from_index, without one_hot()'s range check (a host sync)
                return torch.zeros((*action.shape, self.action_space.dim), dtype=self.action_space.dtype or torch.long,
                                   device=action.device).scatter_(-1, action.long().unsqueeze(-1), 1)
            return self.action_space.from_index(action)
        return action.float()
