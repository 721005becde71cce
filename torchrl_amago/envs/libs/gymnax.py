"""gymnax (JAX) envs as one batched TorchRL env, a :class:`.jax_bridge.JaxBatchedEnv` (docs/domains/gymnax.md)."""
from __future__ import annotations

import numpy as np

from ..._optional import require
from ...spaces import unit_box_affine
from .jax_bridge import ArraySpec, JaxBatchedEnv, make_backend

_FEATURE = "gymnax envs (torchrl_amago.envs.libs.gymnax)"


def _gymnax():
    require("jax", "jax", _FEATURE)
    return require("gymnax", "gymnax", _FEATURE)


def gymnax_env_names() -> list[str]:
    """Every env id gymnax registers (e.g. ``"MemoryChain-bsuite"``), sorted."""
    return sorted(_gymnax().registered_envs)


class GymnaxFunctionalEnv:
    """A gymnax env + its params (default ``env.default_params``) as a functional env for :class:`JaxBatchedEnv`."""

    def __init__(self, env, params=None, backend="jax"):
        self.be = make_backend(backend, "cpu", _FEATURE)
        xp = self.be.xp
        self.env = env
        self.params = env.default_params if params is None else params
        obs_space = env.observation_space(self.params)
        if not hasattr(obs_space, "shape") or type(obs_space).__name__ not in ("Box", "Discrete"):
            raise ValueError(f"gymnax observation space {obs_space} is not supported (Box or Discrete only)")
        self.obs_shape = tuple(int(d) for d in (obs_space.shape or ()))
        self.observation_specs = {"observation": ArraySpec(self.obs_shape, "float32")}
        act = env.action_space(self.params)
        kind = type(act).__name__
        self._loc = self._scale = None
        if kind == "Discrete":
            self.action_spec = ArraySpec((), "int32", n=int(act.n))
        elif kind == "Box":
            low = np.broadcast_to(np.asarray(act.low, dtype=np.float32), act.shape)
            high = np.broadcast_to(np.asarray(act.high, dtype=np.float32), act.shape)
            loc, scale = unit_box_affine(low, high, f"gymnax Box action space {act}")
            self._loc, self._scale = xp.asarray(loc), xp.asarray(scale)
            self.action_spec = ArraySpec(tuple(act.shape), "float32", -1.0, 1.0)
        else:
            raise ValueError(f"gymnax action space {act} is not supported (Discrete or Box)")

    def _obs(self, obs):
        xp = self.be.xp
        return {"observation": xp.asarray(obs, dtype=xp.float32).reshape(self.obs_shape)}

    def reset(self, key):
        obs, state = self.env.reset_env(key, self.params)
        return self._obs(obs), state

    def step(self, key, state, action):
        jnp = self.be.xp
        if self._loc is not None:
            action = jnp.clip(action, -1.0, 1.0) * self._scale + self._loc
        obs, state, reward, terminated, _ = self.env.step_env(key, state, action, self.params)
        terminated = jnp.asarray(terminated, dtype=bool)
        if hasattr(self.env, "is_truncated"):
            truncated = jnp.asarray(self.env.is_truncated(state, self.params), dtype=bool) & ~terminated
        else:  # older gymnax: the time limit is folded into `done`
            truncated = jnp.zeros((), dtype=bool)
        return self._obs(obs), state, jnp.asarray(reward, dtype=jnp.float32), terminated, truncated


def make_gymnax_env(name: str, num_envs: int, *, env_kwargs: dict | None = None, params: dict | None = None,
                    categorical_action_encoding: bool = False, device="cpu", seed: int | None = None
                    ) -> JaxBatchedEnv:
    """``num_envs`` copies of gymnax env ``name`` (``env_kwargs`` to ``gymnax.make``, ``params`` to ``EnvParams``)."""
    gymnax = _gymnax()
    if name not in gymnax.registered_envs:
        raise ValueError(f"unknown gymnax env {name!r}; choose one of {sorted(gymnax.registered_envs)}")
    env, env_params = gymnax.make(name, **(env_kwargs or {}))
    if params:
        unknown = [k for k in params if not hasattr(env_params, k)]
        if unknown:
            raise ValueError(f"gymnax {name} EnvParams has no field(s) {unknown}; fields: "
                             f"{sorted(vars(env_params)) if hasattr(env_params, '__dict__') else env_params}")
        env_params = env_params.replace(**params)
    return JaxBatchedEnv(GymnaxFunctionalEnv(env, env_params), num_envs, backend="jax",
                         categorical_action_encoding=categorical_action_encoding, device=device, seed=seed)
