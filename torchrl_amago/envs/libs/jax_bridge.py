"""A batch of functional JAX envs (gymnax, XLand-MiniGrid) as ONE TorchRL ``EnvBase`` (docs/domains/gymnax.md); a
functional env has ``observation_specs``, ``action_spec``, ``reset(key)``, ``step(key, state, action)`` for one env."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.data import Bounded, Categorical, Composite, OneHot, Unbounded
from torchrl.envs import EnvBase

from ..._optional import require


@dataclass(frozen=True)
class ArraySpec:
    """Per-env array: ``shape``, numpy ``dtype`` name, optional ``low``/``high``; ``n`` for a discrete action."""

    shape: tuple = ()
    dtype: str = "float32"
    low: Any = None
    high: Any = None
    n: int | None = None


_TORCH_DTYPES = {"float32": torch.float32, "float64": torch.float32, "float16": torch.float32,
                 "bfloat16": torch.float32, "int32": torch.int64, "int64": torch.int64, "int8": torch.int64,
                 "int16": torch.int64, "uint8": torch.uint8, "uint32": torch.int64, "bool": torch.bool}


def torch_dtype(dtype: str) -> torch.dtype:
    """The torch dtype of a ``dtype`` array after the bridge (floats -> float32, ints -> int64, uint8/bool kept)."""
    name = np.dtype(dtype).name if dtype != "bfloat16" else dtype
    if name not in _TORCH_DTYPES:
        raise ValueError(f"dtype {dtype!r} is not supported by the JAX bridge ({sorted(_TORCH_DTYPES)})")
    return _TORCH_DTYPES[name]


def _tree_map(fn: Callable, *trees):
    """Map over matching dict/list/tuple structures (numpy backend; pytrees of plain containers only)."""
    t0 = trees[0]
    if isinstance(t0, dict):
        return {k: _tree_map(fn, *(t[k] for t in trees)) for k in t0}
    if isinstance(t0, tuple) and hasattr(t0, "_fields"):  # NamedTuple
        return type(t0)(*(_tree_map(fn, *xs) for xs in zip(*trees)))
    if isinstance(t0, (list, tuple)):
        return type(t0)(_tree_map(fn, *xs) for xs in zip(*trees))
    return fn(*trees)


def _first_leaf(tree):
    while isinstance(tree, (dict, list, tuple)):
        tree = next(iter(tree.values())) if isinstance(tree, dict) else tree[0]
    return tree


class NumpyBackend:
    """Reference backend for tests: ``vmap`` is a Python loop, ``jit`` the identity, keys are int64 seeds."""

    xp = np

    def one_hot(self, x, n: int, dtype):
        return np.eye(n, dtype=dtype)[np.asarray(x)]

    def key(self, seed: int):
        return np.int64(int(seed) % (2 ** 62))

    def split(self, key, n: int):
        return np.random.default_rng(int(key)).integers(0, 2 ** 62, size=n, dtype=np.int64)

    def vmap(self, fn):
        def batched(*args):
            n = len(_first_leaf(args[0]))
            outs = [fn(*(_tree_map(lambda x, i=i: x[i], a) for a in args)) for i in range(n)]
            return _tree_map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *outs)
        return batched

    def jit(self, fn):
        return fn

    tree_map = staticmethod(_tree_map)

    def where(self, mask, a, b):
        a, b = np.asarray(a), np.asarray(b)
        return np.where(mask.reshape(mask.shape + (1,) * (a.ndim - 1)), a, b)

    def from_torch(self, t: torch.Tensor):
        return t.detach().cpu().numpy()

    def to_torch(self, x, device) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(x)).to(device)


class JaxBackend:
    """``jax.vmap`` + ``jax.jit`` on the JAX device matching the torch device; arrays cross with DLPack."""

    def __init__(self, device: torch.device, feature: str = "JAX envs (torchrl_amago.envs.libs.jax_bridge)"):
        self.jax = jax = require("jax", "jax", feature)
        self.xp = self.jnp = require("jax.numpy", "jax", feature)
        device = torch.device(device)
        if device.type == "cuda":
            gpus = [d for d in jax.devices() if d.platform == "gpu"]
            if not gpus:
                raise ValueError("torch device is CUDA but JAX sees no GPU: install a CUDA build of jax "
                                 "(`pip install jax[cuda12]`) or use device='cpu'")
            self.device = gpus[device.index or 0]
        else:
            self.device = jax.devices("cpu")[0]

    def one_hot(self, x, n: int, dtype):
        return self.jax.nn.one_hot(x, n, dtype=dtype)

    def key(self, seed: int):
        return self.jax.device_put(self.jax.random.PRNGKey(int(seed) % (2 ** 32)), self.device)

    def split(self, key, n: int):
        return self.jax.random.split(key, n)

    def vmap(self, fn):
        return self.jax.vmap(fn)

    def jit(self, fn):
        return self.jax.jit(fn)

    def tree_map(self, fn, *trees):
        return self.jax.tree_util.tree_map(fn, *trees)

    def where(self, mask, a, b):
        return self.jnp.where(mask.reshape(mask.shape + (1,) * (a.ndim - 1)), a, b)

    def from_torch(self, t: torch.Tensor):
        if t.device.type == "cuda":
            return self.jax.dlpack.from_dlpack(t.contiguous())
        return self.jax.device_put(t.detach().numpy(), self.device)

    def to_torch(self, x, device) -> torch.Tensor:
        try:
            out = torch.from_dlpack(x)
        except Exception:  # dtypes or layouts DLPack does not carry: go through numpy
            out = torch.as_tensor(np.asarray(x))
        return out.to(device)


def make_backend(backend, device="cpu", feature: str | None = None) -> NumpyBackend | JaxBackend:
    """``"jax"`` or ``"numpy"`` -> a backend instance (instances pass through)."""
    if not isinstance(backend, str):
        return backend
    if backend == "jax":
        return JaxBackend(device, **({"feature": feature} if feature else {}))
    if backend == "numpy":
        return NumpyBackend()
    raise ValueError(f"backend must be 'jax' or 'numpy', got {backend!r}")


def batched_functions(fenv, num_envs: int, be):
    """The compiled batched ``reset_all``, ``reset_where`` and auto-resetting ``step`` of ``fenv`` (backend ``be``)."""
    v_reset, v_step = be.vmap(fenv.reset), be.vmap(fenv.step)

    def _reset_keys(key):
        key, sub = be.split(key, 2)
        return key, be.split(sub, num_envs)

    def reset_all(key):
        key, keys = _reset_keys(key)
        obs, state = v_reset(keys)
        return key, obs, state

    def reset_where(key, obs, state, mask):
        key, keys = _reset_keys(key)
        obs0, st0 = v_reset(keys)
        sel = lambda new, old: be.where(mask, new, old)  # noqa: E731
        return key, be.tree_map(sel, obs0, obs), be.tree_map(sel, st0, state)

    def step(key, state, action):
        key, ks, kr = be.split(key, 3)
        obs, st, reward, term, trunc = v_step(be.split(ks, num_envs), state, action)
        done = term | trunc
        obs0, st0 = v_reset(be.split(kr, num_envs))
        sel = lambda new, old: be.where(done, new, old)  # noqa: E731
        return key, obs, reward, term, trunc, be.tree_map(sel, obs0, obs), be.tree_map(sel, st0, st)

    return be.jit(reset_all), be.jit(reset_where), be.jit(step)


def _obs_spec(s: ArraySpec, B, device):
    shape = (*B, *tuple(s.shape))
    dt = torch_dtype(s.dtype)
    if dt == torch.bool:
        return Categorical(2, shape, dtype=torch.bool, device=device)
    if s.low is not None and s.high is not None:
        low = torch.as_tensor(np.broadcast_to(np.asarray(s.low), s.shape).copy()).to(dt).expand(shape)
        high = torch.as_tensor(np.broadcast_to(np.asarray(s.high), s.shape).copy()).to(dt).expand(shape)
        return Bounded(low, high, shape, dtype=dt, device=device)
    return Unbounded(shape, dtype=dt, device=device)


class JaxBatchedEnv(EnvBase):
    """``num_envs`` copies of a functional env as one TorchRL env. Keys: in ``action``; out the functional env's
    observation keys, ``reward``, ``terminated``, ``truncated``, ``done``."""

    batch_locked = True

    def __init__(self, fenv, num_envs: int, *, backend: str = "jax", categorical_action_encoding: bool = False,
                 device="cpu", seed: int | None = None):
        if not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive int, got {num_envs!r}")
        super().__init__(device=device, batch_size=torch.Size([num_envs]))
        self.fenv, self.num_envs = fenv, num_envs
        self.be = make_backend(backend, self.device)
        self.categorical_action_encoding = bool(categorical_action_encoding)
        B = self.batch_size
        a = fenv.action_spec
        self._discrete = a.n is not None
        if self._discrete:
            self.action_spec = (Categorical(a.n, shape=B, dtype=torch.int64, device=self.device)
                                if self.categorical_action_encoding else
                                OneHot(a.n, shape=(*B, a.n), dtype=torch.int64, device=self.device))
        else:
            if a.low is None or a.high is None:
                raise ValueError("a continuous action ArraySpec needs low and high bounds")
            self.action_spec = _obs_spec(ArraySpec(a.shape, "float32", a.low, a.high), B, self.device)
        self._obs_keys = list(fenv.observation_specs)
        self.observation_spec = Composite({k: _obs_spec(s, B, self.device) for k, s in fenv.observation_specs.items()},
                                          shape=B, device=self.device)
        self.reward_spec = Unbounded((*B, 1), dtype=torch.float32, device=self.device)
        self.done_spec = Composite({k: Categorical(2, (*B, 1), dtype=torch.bool, device=self.device)
                                    for k in ("done", "terminated", "truncated")}, shape=B, device=self.device)
        self._reset_all, self._reset_where, self._step_fn = batched_functions(fenv, num_envs, self.be)
        self._key = self.be.key(int(torch.empty((), dtype=torch.int64).random_().item()) if seed is None else seed)
        self._state = self._cur_obs = None
        self._fresh = torch.zeros(num_envs, dtype=torch.bool)  # slots reset inside the last step (obs: _cur_obs)

    def _obs_td(self, obs, extra: dict | None = None) -> TensorDict:
        specs = self.observation_spec
        data = {k: self.be.to_torch(obs[k], self.device).to(specs[k].dtype).reshape(specs[k].shape)
                for k in self._obs_keys}
        if extra:
            data.update(extra)
        return TensorDict(data, batch_size=self.batch_size, device=self.device)

    def _action(self, td: TensorDictBase):
        a = td.get("action", None)
        if a is None:
            raise KeyError("JaxBatchedEnv.step: the input TensorDict has no 'action' entry")
        if self._discrete:
            idx = a.reshape(self.num_envs) if self.categorical_action_encoding else \
                a.reshape(self.num_envs, -1).argmax(-1)
            return self.be.from_torch(idx.to(torch.int32).cpu())
        return self.be.from_torch(a.reshape(self.num_envs, *self.fenv.action_spec.shape).float().cpu())

    def _flag(self, x) -> torch.Tensor:
        return self.be.to_torch(x, self.device).bool().reshape(self.num_envs, 1)

    def _reset(self, tensordict: TensorDictBase | None = None, **kwargs) -> TensorDictBase:
        mask = tensordict.get("_reset").reshape(self.num_envs).cpu().bool() \
            if tensordict is not None and "_reset" in tensordict.keys() else None
        if mask is None or self._state is None:
            self._key, self._cur_obs, self._state = self._reset_all(self._key)
            self._fresh.zero_()
        else:
            need = mask & ~self._fresh
            if bool(need.any()):
                self._key, self._cur_obs, self._state = self._reset_where(
                    self._key, self._cur_obs, self._state, self.be.from_torch(need))
            self._fresh &= ~mask
        return self._obs_td(self._cur_obs)

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        if self._state is None:
            raise RuntimeError("JaxBatchedEnv: call reset() before step()")
        self._key, obs, reward, term, trunc, self._cur_obs, self._state = self._step_fn(
            self._key, self._state, self._action(tensordict))
        term, trunc = self._flag(term), self._flag(trunc)
        self._fresh = (term | trunc).reshape(self.num_envs).cpu()
        rew = self.be.to_torch(reward, self.device).float().reshape(self.num_envs, 1)
        return self._obs_td(obs, {"reward": rew, "terminated": term, "truncated": trunc, "done": term | trunc})

    def _set_seed(self, seed: int | None):
        self._key = self.be.key(0 if seed is None else int(seed))
