"""The acting policy for TorchRL collectors: timestep encoder -> trajectory encoder (step mode) -> actor head."""
from __future__ import annotations

from typing import Any

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import TensorDictModuleBase
from tensordict.nn.probabilistic import InteractionType, interaction_type
from torch import nn

from .. import keys as K
from ..spaces import ActionSpace
from .trajectory.adapters import RecurrentSequenceModule, as_sequence_module, is_torchrl_recurrent
from .trajectory.base import TrajectoryEncoder
from .trajectory.module import TrajectoryEncoderModule
from .weight_cache import WeightProbe

#: What a missing per-step key means: the env was not wrapped (docs/api/envs.md).
_WRAP = ("wrap the env with torchrl_amago.envs.make_amago_env(env), which adds time_idx, is_init, prev_action and "
         "prev_reward")
_DETERMINISTIC = (InteractionType.DETERMINISTIC, InteractionType.MODE, InteractionType.MEAN, InteractionType.MEDIAN)


def acting_is_deterministic() -> bool:
    """True under set_exploration_type(DETERMINISTIC / MODE / MEAN / MEDIAN); RANDOM or unset -> sample."""
    return interaction_type() in _DETERMINISTIC


class _WeightWrites(dict):
    """The policy's ``_buffers`` dict: listing or setting its tensors (TorchRL's weight sync) sets ``written``."""

    written = False

    def items(self):
        self.written = True
        return super().items()

    def values(self):
        self.written = True
        return super().values()

    def __setitem__(self, key, value):
        self.written = True
        super().__setitem__(key, value)

    def __reduce_ex__(self, protocol):  # pickled (spawned workers, deepcopy) as the same kind of dict
        return (_WeightWrites, (dict(self),))


class AMAGOPolicy(TensorDictModuleBase):
    """Collector policy: timestep encoder -> trajectory encoder (step mode) -> actor head (docs/api/modules.md,
    "The acting policy"). Keys in: the timestep encoder's in_keys, `time_key`, `init_key`; out: `action_key` (and
    `params_key`, the actor head's raw output). Put `make_tensordict_primer()` on the env when it is not None."""

    def __init__(self, timestep_encoder: nn.Module, trajectory_encoder: nn.Module, actor_head: nn.Module,
                 action_space: ActionSpace, *, time_key=K.TIME_IDX, init_key=K.IS_INIT, action_key=K.ACTION,
                 eval_when_acting: bool = True, deterministic: bool | None = None, params_key=None,
                 tensordict_state: bool = False):
        super().__init__()
        self.__dict__["_buffers"] = _WeightWrites(self._buffers)  # weight pushes drop the acting caches
        if not isinstance(action_space, ActionSpace):
            raise ValueError(f"action_space must be a torchrl_amago.spaces.ActionSpace, got {type(action_space).__name__}")
        if isinstance(trajectory_encoder, TrajectoryEncoderModule):
            trajectory_encoder = trajectory_encoder.encoder  # the loss's wrapper: act with the encoder itself
        elif isinstance(trajectory_encoder, RecurrentSequenceModule):
            trajectory_encoder = trajectory_encoder.module
        as_sequence_module(trajectory_encoder)  # raises, naming the wrapper to use, for anything not accepted
        self._memory_kind = ("encoder" if isinstance(trajectory_encoder, TrajectoryEncoder) else
                             "torchrl_rnn" if is_torchrl_recurrent(trajectory_encoder) else "feedforward")
        if tensordict_state and self._memory_kind != "encoder":
            raise ValueError(f"tensordict_state=True is for torchrl_amago's TrajectoryEncoders; "
                             f"{type(trajectory_encoder).__name__} keeps its state where it always does")
        self.tensordict_state = bool(tensordict_state)
        self.timestep_encoder, self.trajectory_encoder = timestep_encoder, trajectory_encoder
        self.actor_head = actor_head
        # plain attributes (not submodules / buffers): the state_dict is exactly the three submodules
        self.action_space = action_space
        self.time_key, self.init_key, self.action_key = time_key, init_key, action_key
        self.eval_when_acting = eval_when_acting
        self.deterministic = deterministic  # None: follow the exploration type; else always argmax-or-mean / sample
        tin = list(getattr(timestep_encoder, "in_keys", None) or [])
        if not tin:
            raise ValueError("timestep_encoder must be a TensorDict module with in_keys (e.g. MLPTimestepEncoder)")
        self._tstep_in_keys = tin
        tout = list(getattr(timestep_encoder, "out_keys", ["tstep_emb"]))
        if len(tout) != 1:
            raise ValueError(f"timestep_encoder must have exactly one out_key, got {tout}")
        self._tstep_key = tout[0]
        self.in_keys = tin + [time_key, init_key]
        self.params_key = params_key
        self.out_keys = [action_key] + ([params_key] if params_key is not None else [])
        self._params: torch.Tensor | None = None  # the last step's actor params, while params_key is set
        self._state_keys: list = []  # state in TensorDict entries: the keys read at the root
        # steps a memory whose state lives in the tensordict (not a submodule: the state_dict stays the three modules)
        self.__dict__["_td_memory"] = None
        if self._memory_kind == "torchrl_rnn":
            if trajectory_encoder.in_keys[0] != self._tstep_key:
                raise ValueError(f"{type(trajectory_encoder).__name__} reads {trajectory_encoder.in_keys[0]!r} but the "
                                 f"timestep encoder writes {self._tstep_key!r}: build it with in_key={self._tstep_key!r}")
            self.__dict__["_td_memory"] = trajectory_encoder
            self._state_keys = [k for k in trajectory_encoder.in_keys[1:] if k != K.IS_INIT]
        elif self.tensordict_state:
            self.__dict__["_td_memory"] = TrajectoryEncoderModule(
                trajectory_encoder, in_key=self._tstep_key, time_key=time_key, init_key=K.IS_INIT,  # `sub`'s keys
                default_recurrent_mode=False)
            self._state_keys = list(self._td_memory.state_keys)
        if self._td_memory is not None:
            self.in_keys += self._state_keys
            self.out_keys += list(self._td_memory.out_keys[1:])
        elif self._memory_kind == "feedforward":
            self._ff_out_key = trajectory_encoder.out_keys[0]
        self._states: dict[int, Any] = {}  # the policy's own acting state, one per number of envs
        self._last_n: int | None = None
        # bumped by whoever pushes weights by other means than TorchRL's; a copy that sees a new value drops its caches
        self.register_buffer("weights_version", torch.zeros((), dtype=torch.long), persistent=False)
        self._seen_weights_version, self._clears_left, self._next_state = 0, 0, {}
        self._mode_cache: tuple | None = None  # (ids of the 3 submodules, flat module list or None)
        self.__dict__["_probe"] = WeightProbe(self)  # sees weight writes the version counters miss (`.data`)

    def make_tensordict_primer(self):
        """The env transform that creates the memory's state entries, or None (state not in the tensordict)."""
        return None if self._td_memory is None else self._td_memory.make_tensordict_primer()

    def reset_state(self) -> None:
        """Forget every env's context, for every number of envs (the next call allocates a fresh state)."""
        self._states, self._last_n, self._mode_cache = {}, None, None

    def fresh_copy(self) -> "AMAGOPolicy":
        """A policy sharing the same modules (weights) but with its own, empty state (e.g. for eval envs)."""
        return AMAGOPolicy(self.timestep_encoder, self.trajectory_encoder, self.actor_head, self.action_space,
                           time_key=self.time_key, init_key=self.init_key, action_key=self.action_key,
                           eval_when_acting=self.eval_when_acting, deterministic=self.deterministic,
                           params_key=self.params_key, tensordict_state=self.tensordict_state)

    @property
    def state(self) -> Any:
        """The policy's own acting state for the number of envs it acted for last (None before any step)."""
        return self._states.get(self._last_n)

    def _get(self, td: TensorDictBase, key, hint: str) -> torch.Tensor:
        val = td.get(key, None)
        if val is None:
            raise KeyError(f"AMAGOPolicy: key {key!r} is missing from the env output ({hint})")
        return val

    def _flat_modules(self) -> list[nn.Module] | None:
        """Every module under the three submodules (cached), or None if one of them overrides `train()`."""
        roots = (self.timestep_encoder, self.trajectory_encoder, self.actor_head)
        key = tuple(id(m) for m in roots)
        if self._mode_cache is None or self._mode_cache[0] != key:
            mods = [m for r in roots for m in r.modules()]
            plain = all(type(m).train is nn.Module.train for m in mods)
            self._mode_cache = (key, mods if plain else None)
        return self._mode_cache[1]

    def clear_weight_caches(self) -> None:
        """Drop every acting cache derived from the weights (sigma-reparam W_hat, InputNorm constants)."""
        self._probe.clear()

    def bump_weights_version(self) -> None:
        """Mark this policy's weights as new for its copies, before a push by other means than TorchRL's weight sync."""
        self.weights_version += 1

    @torch.no_grad()
    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        buffers = self._buffers
        if buffers.written:  # the weights were listed to be written (a weight push): they are in place by now
            buffers.written = False
            self._clears_left = max(self._clears_left, 1)
        version = int(self.weights_version)
        if version != self._seen_weights_version:  # a bumped version arrived with new weights
            self._seen_weights_version = version
            self._clears_left = 2  # this step and the next: a push may still be copying the other tensors
        if self._clears_left:
            self.clear_weight_caches()
            self._clears_left -= 1
        shape = tensordict.batch_size
        flat = tensordict.reshape(-1) if len(shape) != 1 else tensordict
        n = flat.batch_size[0]
        time_idx = self._get(flat, self.time_key, _WRAP).reshape(n, -1)
        is_init = self._get(flat, self.init_key, _WRAP).reshape(n, -1)
        if time_idx.shape[-1] != 1 or is_init.shape[-1] != 1:
            raise ValueError(f"{self.time_key!r} and {self.init_key!r} must be [N, 1] per env, got "
                             f"{tuple(time_idx.shape)} and {tuple(is_init.shape)}")
        time_idx, is_init = time_idx.squeeze(-1), is_init.squeeze(-1).bool()
        if not self.eval_when_acting:
            action = self._act(flat, time_idx, is_init, n)
        elif (mods := self._flat_modules()) is not None:
            switched = [m for m in mods if m.training]
            for m in switched:  # as .eval() (no module overrides train()), without nn.Module.__setattr__
                object.__setattr__(m, "training", False)
            try:
                action = self._act(flat, time_idx, is_init, n)
            finally:
                for m in switched:
                    object.__setattr__(m, "training", True)
        else:
            # top-level flags only: `.train()` / `.eval()` recurse, so a submodule in eval mode has eval children
            to_restore = [m for m in (self.timestep_encoder, self.trajectory_encoder, self.actor_head) if m.training]
            for m in to_restore:
                m.train(False)
            try:
                action = self._act(flat, time_idx, is_init, n)
            finally:
                for m in to_restore:
                    m.train(True)
        tensordict.set(self.action_key, action.reshape((*shape, *action.shape[1:])))
        if self.params_key is not None:
            tensordict.set(self.params_key, self._params.reshape((*shape, *self._params.shape[1:])))
            self._params = None
        for key, val in self._next_state.items():  # TorchRL recurrent state, written under "next"
            tensordict.set(key, val.reshape((*shape, *val.shape[1:])))
        self._next_state = {}
        return tensordict

    def _memory_step(self, flat: TensorDictBase, tstep: torch.Tensor, time_idx: torch.Tensor,
                     is_init: torch.Tensor, n: int) -> torch.Tensor:
        """One step of the trajectory encoder for n envs -> state embedding [n, D]."""
        dev = tstep.device
        enc = self.trajectory_encoder
        if self._memory_kind == "encoder" and not self.tensordict_state:
            state = self._states.get(n)
            state = enc.reset_state(enc.init_state(n, dev) if state is None else state, is_init.to(dev))
            state_emb, self._states[n] = enc.step(tstep, time_idx.to(dev), state)
            self._last_n = n
            return state_emb
        sub = TensorDict({self._tstep_key: tstep, self.time_key: time_idx.to(dev).unsqueeze(-1),
                          K.IS_INIT: is_init.to(dev).unsqueeze(-1)}, batch_size=[n], device=dev)
        if self._memory_kind == "feedforward":
            return enc(sub).get(self._ff_out_key)
        from torchrl.modules import set_recurrent_mode

        for key in self._state_keys:  # absent (no primer yet / first call): the module starts from zeros
            val = flat.get(key, None)
            if val is not None:
                sub.set(key, val.to(dev))
        mem = self._td_memory
        with set_recurrent_mode(False):
            out = mem(sub)
        self._next_state = {key: out.get(key) for key in mem.out_keys[1:]}
        return out.get(mem.out_keys[0])

    def _act(self, flat: TensorDictBase, time_idx: torch.Tensor, is_init: torch.Tensor, n: int) -> torch.Tensor:
        token = self._probe.enter()  # the acting caches are reused only once their weights were checked
        try:
            return self._act_probed(flat, time_idx, is_init, n)
        finally:
            self._probe.leave(token)

    def _act_probed(self, flat: TensorDictBase, time_idx: torch.Tensor, is_init: torch.Tensor,
                    n: int) -> torch.Tensor:
        sub = flat.select(*self._tstep_in_keys, strict=False)  # keeps tstep_emb out of the env data
        tstep = self.timestep_encoder(sub).get(self._tstep_key)
        state_emb = self._memory_step(flat, tstep, time_idx, is_init, n)
        params = self.actor_head(state_emb)
        if self.params_key is not None:
            self._params = params
        action = self.actor_head.act(
            params, acting_is_deterministic() if self.deterministic is None else self.deterministic)
        if self.action_space.discrete:
            if self.action_space.one_hot:  # == from_index, without one_hot()'s range check (a host sync)
                return torch.zeros((*action.shape, self.action_space.dim), dtype=self.action_space.dtype or torch.long,
                                   device=action.device).scatter_(-1, action.long().unsqueeze(-1), 1)
            return self.action_space.from_index(action)
        return action.float()
