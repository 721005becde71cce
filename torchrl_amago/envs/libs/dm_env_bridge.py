"""A generic ``dm_env.Environment`` -> TorchRL ``EnvBase`` adapter (docs/domains/alchemy.md); batch it with
:func:`make_dm_env`. ``StepType.LAST`` is ``terminated`` when its discount is 0, else ``truncated``."""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.data import Binary, Bounded, Categorical, Composite, OneHot, Unbounded
from torchrl.envs import EnvBase, SerialEnv

from ..._optional import require
from ...spaces import unit_box_affine

_LAST = 2  # dm_env.StepType.LAST (an IntEnum)


def dm_env_module():
    """``import dm_env`` with an error naming the pip package (``dm-env``)."""
    return require("dm_env", "dm-env", "dm_env environments (torchrl_amago.envs.libs.dm_env_bridge)")


def _kind(spec) -> str:
    """'discrete', 'bounded', 'string' or 'array': the dm_env spec class, by duck typing."""
    if hasattr(spec, "num_values"):
        return "discrete"
    if hasattr(spec, "minimum") and hasattr(spec, "maximum"):
        return "bounded"
    if hasattr(spec, "string_type") or np.dtype(getattr(spec, "dtype", np.float32)).kind in "OSU":
        return "string"
    return "array"


def _torch_dtype(dtype) -> torch.dtype:
    return torch.from_numpy(np.zeros((), dtype=np.dtype(dtype))).dtype


def _obs_shape(spec) -> tuple[int, ...]:
    return tuple(int(s) for s in spec.shape) or (1,)


def observation_spec_from_dm(spec, name: str = "observation"):
    """One dm_env observation spec -> a TorchRL leaf spec (scalars: shape ``(1,)``)."""
    kind = _kind(spec)
    if kind == "string":
        raise ValueError(f"observation {name!r}: string specs are not supported; leave the key out with "
                         "observation_keys=[...]")
    shape = _obs_shape(spec)
    dtype = _torch_dtype(spec.dtype)
    if dtype == torch.bool:
        return Binary(shape=shape, dtype=torch.bool)
    if kind in ("bounded", "discrete"):
        low = torch.as_tensor(np.broadcast_to(np.asarray(spec.minimum), spec.shape).reshape(shape).copy(), dtype=dtype)
        high = torch.as_tensor(np.broadcast_to(np.asarray(spec.maximum), spec.shape).reshape(shape).copy(), dtype=dtype)
        return Bounded(low=low, high=high, shape=shape, dtype=dtype)
    return Unbounded(shape=shape, dtype=dtype)


def _flatten_obs_specs(spec, prefix: tuple = ()) -> dict[tuple, Any]:
    if isinstance(spec, Mapping):
        return {key: s for k, v in spec.items() for key, s in _flatten_obs_specs(v, prefix + (str(k),)).items()}
    if isinstance(spec, (list, tuple)):
        raise ValueError(f"observation spec at {prefix or 'the root'} is a {type(spec).__name__}; only dicts "
                         "(nested allowed) or single array specs are supported")
    return {prefix: spec}


class ActionMap:
    """TorchRL action <-> native dm_env action for one dm_env action spec (see the module docstring)."""

    def __init__(self, spec, categorical_action_encoding: bool = True, rescale_actions: bool = True):
        if isinstance(spec, (Mapping, list, tuple)):
            raise ValueError("only a single action spec is supported (no dict/tuple of actions)")
        self.native_dtype = np.dtype(spec.dtype)
        self.native_shape = tuple(int(s) for s in spec.shape)
        kind = _kind(spec)
        self.discrete = kind == "discrete" or (kind == "bounded" and self.native_dtype.kind in "iu")
        self.loc = self.scale = None
        if self.discrete:
            if kind == "discrete":
                lo, hi = np.zeros(self.native_shape, np.int64), np.full(self.native_shape, int(spec.num_values) - 1)
            else:
                lo = np.broadcast_to(np.asarray(spec.minimum, np.int64), self.native_shape)
                hi = np.broadcast_to(np.asarray(spec.maximum, np.int64), self.native_shape)
            self.minimum = np.asarray(lo, np.int64)
            self.nvec = (np.asarray(hi, np.int64) - self.minimum + 1).reshape(-1)
            self.n = int(np.prod(self.nvec)) if self.nvec.size else 1
            self.one_hot = not categorical_action_encoding
            self.spec = OneHot(self.n) if self.one_hot else Categorical(self.n)
        elif kind == "string" or self.native_dtype == np.bool_:
            raise ValueError(f"dm_env action spec {spec} is not supported (discrete or float arrays only)")
        else:
            shape = self.native_shape or (1,)
            if kind == "bounded" and rescale_actions:
                low = np.broadcast_to(np.asarray(spec.minimum, np.float32), self.native_shape).reshape(shape)
                high = np.broadcast_to(np.asarray(spec.maximum, np.float32), self.native_shape).reshape(shape)
                self.loc, self.scale = unit_box_affine(low, high, f"dm_env action spec {spec}")
                self.spec = Bounded(-1.0, 1.0, shape=shape, dtype=torch.float32)
            elif kind == "bounded":
                lim = [torch.as_tensor(np.broadcast_to(np.asarray(x, np.float32), self.native_shape)
                                       .reshape(shape).copy()) for x in (spec.minimum, spec.maximum)]
                self.spec = Bounded(low=lim[0], high=lim[1], shape=shape, dtype=torch.float32)
            else:
                self.spec = Unbounded(shape=shape, dtype=torch.float32)

    def to_native(self, action: torch.Tensor):
        a = action.detach().cpu()
        if self.discrete:
            idx = int(a.long().argmax(-1)) if self.one_hot else int(a.reshape(-1)[0])
            if not 0 <= idx < self.n:
                raise ValueError(f"discrete action {idx} is out of range [0, {self.n})")
            if not self.native_shape:
                return self.native_dtype.type(idx + int(self.minimum))
            parts = np.array(np.unravel_index(idx, tuple(self.nvec))).reshape(self.native_shape)
            return (parts + self.minimum).astype(self.native_dtype)
        x = a.float().numpy().reshape(self.native_shape or (1,))
        if self.loc is not None:
            x = np.clip(x, -1.0, 1.0) * self.scale + self.loc
        return x.reshape(self.native_shape).astype(self.native_dtype)


class DMEnvWrapper(EnvBase):
    """One ``dm_env.Environment`` (``env``, or ``env_fn(seed)`` with seeds from the ``seed``-ed RNG) as an unbatched
    TorchRL env. Keys: in ``action``; out the observation keys, ``reward``, ``done``, ``terminated``, ``truncated``."""

    batch_locked = False

    def __init__(self, env=None, *, env_fn: Callable[[int], Any] | None = None, recreate_on_reset: bool = False,
                 observation_keys: Sequence[str] | None = None, obs_key: str = "observation",
                 categorical_action_encoding: bool = True, rescale_actions: bool = True, seed: int | None = None,
                 device="cpu"):
        super().__init__(device=device, batch_size=torch.Size([]))
        if (env is None) == (env_fn is None):
            raise ValueError("pass exactly one of env= or env_fn=")
        if recreate_on_reset and env_fn is None:
            raise ValueError("recreate_on_reset=True needs env_fn=")
        self.env_fn, self.recreate_on_reset = env_fn, recreate_on_reset
        self._rng = np.random.default_rng(seed)
        self._env = env if env is not None else env_fn(self._draw_seed())
        obs_spec = self._env.observation_spec()
        self._dict_obs = isinstance(obs_spec, Mapping)
        flat = _flatten_obs_specs(obs_spec)
        if self._dict_obs and observation_keys is not None:
            keep = {tuple(k.split("/")) if isinstance(k, str) else tuple(k) for k in observation_keys}
            missing = keep - set(flat)
            if missing:
                raise KeyError(f"observation_keys {sorted('/'.join(m) for m in missing)} are not in the dm_env "
                               f"observation spec (keys: {sorted('/'.join(k) for k in flat)})")
            flat = {k: v for k, v in flat.items() if k in keep}
        elif not self._dict_obs:
            flat = {(obs_key,): flat[()]}
        self._obs_specs = flat
        comp = Composite()
        for key, spec in flat.items():
            comp[key] = observation_spec_from_dm(spec, "/".join(key))
        self.observation_spec = comp
        self.action_map = ActionMap(self._env.action_spec(), categorical_action_encoding, rescale_actions)
        self.action_spec = self.action_map.spec
        rspec = self._env.reward_spec() if hasattr(self._env, "reward_spec") else None
        if rspec is not None and (isinstance(rspec, (Mapping, list, tuple)) or
                                  int(np.prod(getattr(rspec, "shape", ()))) != 1):
            raise ValueError(f"only scalar rewards are supported, got reward spec {rspec}")
        self.reward_spec = Unbounded(shape=(1,), dtype=torch.float32)
        self.done_spec = Composite({k: Categorical(2, (1,), dtype=torch.bool)
                                    for k in ("done", "terminated", "truncated")})
        self.last_timestep = None

    @property
    def dm_env(self):
        """The wrapped dm_env environment (a new one after each reset with ``recreate_on_reset``)."""
        return self._env

    def _draw_seed(self) -> int:
        return int(self._rng.integers(0, 2 ** 31 - 1))

    def _make_td(self, observation, extra: dict | None = None) -> TensorDictBase:
        td = TensorDict({}, batch_size=[], device=self.device)
        for key in self._obs_specs:
            value = observation
            if self._dict_obs:
                for k in key:
                    value = value[k]
            leaf = self.observation_spec[key]
            td.set(key, torch.as_tensor(np.asarray(value).reshape(leaf.shape), dtype=leaf.dtype, device=self.device))
        for key, value in (extra or {}).items():
            td.set(key, value)
        return td

    def _reset(self, tensordict: TensorDictBase | None = None, **kwargs) -> TensorDictBase:
        if self.recreate_on_reset:
            old, self._env = self._env, self.env_fn(self._draw_seed())
            if old is not None and old is not self._env and hasattr(old, "close"):
                old.close()
        self.last_timestep = ts = self._env.reset()
        false = torch.zeros(1, dtype=torch.bool, device=self.device)
        return self._make_td(ts.observation, {"done": false, "terminated": false.clone(), "truncated": false.clone()})

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        self.last_timestep = ts = self._env.step(self.action_map.to_native(tensordict.get("action")))
        last = int(ts.step_type) == _LAST
        terminated = last and ts.discount is not None and float(np.asarray(ts.discount).reshape(-1)[0]) == 0.0
        reward = 0.0 if ts.reward is None else float(np.asarray(ts.reward).reshape(-1)[0])
        flag = lambda b: torch.tensor([b], dtype=torch.bool, device=self.device)  # noqa: E731
        return self._make_td(ts.observation, {
            "reward": torch.tensor([reward], dtype=torch.float32, device=self.device),
            "done": flag(last), "terminated": flag(terminated), "truncated": flag(last and not terminated)})

    def _set_seed(self, seed: int | None) -> None:
        self._rng = np.random.default_rng(seed)

    def close(self, *, raise_if_closed: bool = True):
        env = getattr(self, "_env", None)
        if env is not None and hasattr(env, "close"):
            env.close()
        return super().close(raise_if_closed=raise_if_closed)


def make_dm_env(make_one: Callable[[], DMEnvWrapper], num_envs: int) -> SerialEnv:
    """``num_envs`` wrappers from ``make_one()`` in one ``SerialEnv``."""
    if not isinstance(num_envs, int) or num_envs < 1:
        raise ValueError(f"num_envs must be a positive int, got {num_envs!r}")
    return SerialEnv(num_envs, make_one)
