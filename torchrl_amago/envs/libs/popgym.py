"""POPGym as batched TorchRL envs, prepared like AMAGO's ``POPGym`` wrapper (flat observation with ``timer / 1000``,
one ``Discrete`` action, ``Box`` actions in ``[-1, 1]``; docs/domains/popgym.md). ``pip install popgym``."""
from __future__ import annotations

import gymnasium as gym
import numpy as np
from torchrl.envs import GymWrapper, SerialEnv

from ..._optional import require
from ...spaces import unit_box_affine

_FEATURE = "POPGym envs (torchrl_amago.envs.libs.popgym)"


def _popgym_envs():
    require("popgym", "popgym", _FEATURE)
    return require("popgym.envs", "popgym", _FEATURE)


def popgym_env_names() -> list[str]:
    """Class names of every popgym env (e.g. ``"RepeatPreviousEasy"``), sorted."""
    return sorted(cls.__name__ for cls in _popgym_envs().ALL)


def _popgym_class(name: str):
    envs = _popgym_envs()
    by_name = {cls.__name__: cls for cls in envs.ALL}
    if name not in by_name:
        raise ValueError(f"unknown POPGym env {name!r}; choose one of {sorted(by_name)}")
    return by_name[name]


def popgym_episode_length(name: str) -> int | None:
    """The env's own episode length (popgym's ``max_episode_length``), or None where the game has no fixed one."""
    length = getattr(_popgym_class(name)(), "max_episode_length", None)
    return None if length is None else int(length)


def popgym_num_actions(name: str) -> int | None:
    """How many discrete actions the prepared env has (``MultiDiscrete``: the product), or None for ``Box``."""
    act = _popgym_class(name)().action_space
    if isinstance(act, gym.spaces.MultiDiscrete):
        return int(np.prod(act.nvec))
    return int(act.n) if isinstance(act, gym.spaces.Discrete) else None


class POPGymObservation(gym.Wrapper):
    """Flat float observation ``[flatten(obs), timer / timer_scale]``, one ``Discrete`` action, ``Box`` in [-1, 1]."""

    def __init__(self, env: gym.Env, truncated_is_done: bool = True, timer_scale: float = 1000.0):
        super().__init__(env)
        self.truncated_is_done = truncated_is_done
        self.timer_scale = float(timer_scale)
        self.timer = 0
        flat = gym.spaces.utils.flatten_space(env.observation_space)
        low = np.append(np.asarray(flat.low, dtype=np.float32), 0.0).astype(np.float32)
        high = np.append(np.asarray(flat.high, dtype=np.float32), np.inf).astype(np.float32)
        self.observation_space = gym.spaces.Box(low, high, dtype=np.float32)
        act = env.action_space
        self._unravel = self._loc = self._scale = None
        if isinstance(act, gym.spaces.MultiDiscrete):
            self._unravel = act.nvec
            self.action_space = gym.spaces.Discrete(int(np.prod(act.nvec)))
        elif isinstance(act, gym.spaces.Box):
            self._loc, self._scale = unit_box_affine(act.low, act.high, f"POPGym Box action space {act}")
            self.action_space = gym.spaces.Box(-1.0, 1.0, act.shape, dtype=np.float32)
        elif not isinstance(act, gym.spaces.Discrete):
            raise ValueError(f"POPGym action space {act} is not supported (Discrete, MultiDiscrete or Box)")

    def _obs(self, obs) -> np.ndarray:
        flat = gym.spaces.utils.flatten(self.env.observation_space, obs).astype(np.float32)
        return np.append(flat, np.float32(self.timer / self.timer_scale)).astype(np.float32)

    def _action(self, action):
        if self._unravel is not None:
            return np.array(np.unravel_index(int(np.asarray(action).reshape(())), self._unravel))
        if self._loc is not None:
            a = np.clip(np.asarray(action, dtype=np.float32), -1.0, 1.0)
            return (a * self._scale + self._loc).astype(self.env.action_space.dtype)
        return int(np.asarray(action).reshape(()))

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self.timer = 0
        return self._obs(obs), info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(self._action(action))
        self.timer += 1
        if self.truncated_is_done:
            terminated = bool(terminated) or bool(truncated)
        return self._obs(obs), float(reward), bool(terminated), bool(truncated), info


def make_popgym_gym(name: str, truncated_is_done: bool = True) -> gym.Env:
    """One gymnasium popgym env, prepared (see :class:`POPGymObservation`)."""
    return POPGymObservation(_popgym_class(name)(), truncated_is_done=truncated_is_done)


def make_popgym_torchrl(name: str, truncated_is_done: bool = True, categorical_action_encoding: bool = False
                        ) -> GymWrapper:
    """One unbatched TorchRL env (``GymWrapper``) for popgym env ``name``."""
    return GymWrapper(make_popgym_gym(name, truncated_is_done),
                      categorical_action_encoding=categorical_action_encoding)


def make_popgym_env(name: str, num_envs: int, truncated_is_done: bool = True,
                    categorical_action_encoding: bool = False) -> SerialEnv:
    """``num_envs`` copies of popgym env ``name`` in one ``SerialEnv``; wrap it with ``make_amago_env``."""
    if not isinstance(num_envs, int) or num_envs < 1:
        raise ValueError(f"num_envs must be a positive int, got {num_envs!r}")
    _popgym_class(name)  # fail here, with the list of names, rather than inside SerialEnv
    return SerialEnv(num_envs, lambda: make_popgym_torchrl(name, truncated_is_done, categorical_action_encoding))
