"""Any gymnasium env as a TorchRL env in the form AMAGO acts in; bounded ``Box`` actions are rescaled to ``[-1, 1]``
inside the gym env (``RescaleAction``). ``SameTaskGymEnv`` keeps the task across a ``MetaTrial`` trial."""
from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import torch
from tensordict import TensorDictBase
from torchrl.envs import EnvBase, GymEnv, GymWrapper, SerialEnv

from ...spaces import unit_box_affine


def _needs_rescale(space) -> bool:
    return isinstance(space, gym.spaces.Box) and not (np.all(space.low == -1) and np.all(space.high == 1))


def gym_action_info(env_id: str) -> tuple[int | None, tuple[np.ndarray, np.ndarray] | None]:
    """``(discrete action count or None, (low, high) of Box actions that get rescaled or None)`` of the env."""
    env = gym.make(env_id)
    space = env.action_space
    env.close()
    if isinstance(space, gym.spaces.Discrete):
        return int(space.n), None
    return None, ((space.low, space.high) if _needs_rescale(space) else None)


def gym_time_limit(env_id: str, max_episode_steps: int | None = None) -> int:
    """``max_episode_steps`` if given (> 0), else the env's registered time limit (a ValueError without one)."""
    if max_episode_steps:
        return int(max_episode_steps)
    limit = gym.spec(env_id).max_episode_steps
    if limit is None:
        raise ValueError(f"{env_id} has no time limit: pass --max_episode_steps")
    return int(limit)


def make_gym_env(env_id: str, max_episode_steps: int | None = None, categorical_actions: bool = False) -> EnvBase:
    """One unbatched TorchRL env (``max_episode_steps`` None or 0: the env's own time limit)."""
    kw = {"max_episode_steps": max_episode_steps} if max_episode_steps else {}
    env = gym.make(env_id, **kw)
    if _needs_rescale(env.action_space):
        unit_box_affine(env.action_space.low, env.action_space.high, f"{env_id} action space")  # finite bounds
        one = np.ones(env.action_space.shape, dtype=np.float32)
        return GymWrapper(gym.wrappers.RescaleAction(env, -one, one), categorical_action_encoding=categorical_actions)
    env.close()
    return GymEnv(env_id, categorical_action_encoding=categorical_actions, **kw)


def make_gym_envs(env_id: str, num_envs: int, max_episode_steps: int | None = None,
                  categorical_actions: bool = False) -> EnvBase:
    """``num_envs`` copies of ``make_gym_env`` batched in one process (``SerialEnv``)."""
    return SerialEnv(num_envs, lambda: make_gym_env(env_id, max_episode_steps, categorical_actions))


#: Attributes of a gymnasium env's ``unwrapped`` object compared between a trial's episodes (plain values and small
#: arrays; a task is one of them).
_MAX_COMPARED_ELEMENTS = 4096


def task_state(env) -> dict:
    """The plain attributes of a gymnasium env's ``unwrapped`` object (numbers, strings, tuples of them, small
    arrays), except its random generator: what a seeded reset must reproduce."""
    out = {}
    for name, value in vars(env.unwrapped).items():
        if "np_random" in name:
            continue
        if isinstance(value, (bool, int, float, str)) or (isinstance(value, tuple) and all(
                isinstance(v, (bool, int, float, str)) for v in value)):
            out[name] = value
        elif isinstance(value, np.ndarray) and value.size <= _MAX_COMPARED_ELEMENTS:
            out[name] = (value.dtype.str, value.shape, value.tobytes())
    return out


class _SameTask:
    """Soft resets replay the trial's reset seed (the same task). The first `CHECKED_SOFT_RESETS` soft resets check that
    the replayed reset rebuilt the env's state (`task_state`) and warn once naming what differs: a task drawn from
    another generator than the env's own ``self.np_random`` (e.g. ``np.random``) changes in every episode."""

    supports_soft_reset = True
    _soft_resets_checked = 0  # the first CHECKED_SOFT_RESETS soft resets are checked, until one differs
    CHECKED_SOFT_RESETS = 8

    def _reset(self, tensordict: TensorDictBase | None = None, soft_reset: bool = False, **kwargs):
        task_seed = getattr(self, "_task_seed", None)
        if soft_reset and task_seed is not None:
            kwargs["seed"] = task_seed
        else:
            if kwargs.get("seed") is None:
                kwargs["seed"] = int(torch.randint(0, 2**31 - 1, (), generator=getattr(self, "_task_rng", None)))
            else:  # set_seed(seed): later hard resets draw their seeds from a generator seeded with it
                self._task_rng = torch.Generator().manual_seed(int(kwargs["seed"]))
            self._task_seed = int(kwargs["seed"])
        out = super()._reset(tensordict, **kwargs)
        if self._soft_resets_checked < self.CHECKED_SOFT_RESETS:
            self._check_same_task(soft_reset and task_seed is not None)
        return out

    def _check_same_task(self, soft: bool) -> None:
        state = task_state(self._env)
        if not soft:
            self._task_state = state
            return
        self._soft_resets_checked += 1
        changed = sorted(k for k in set(state) | set(self._task_state) if state.get(k) != self._task_state.get(k))
        if changed:
            self._soft_resets_checked = self.CHECKED_SOFT_RESETS  # warned once
            name = getattr(self._env.unwrapped, "spec", None)
            warnings.warn(f"{type(self).__name__}({getattr(name, 'id', None) or type(self._env.unwrapped).__name__}): "
                          f"after a soft reset replayed the trial's seed, the env's attributes {changed} differ from "
                          f"the trial's first episode, so each episode may get a new task: draw the task from "
                          f"self.np_random after super().reset(seed=seed), not from np.random or random (if these "
                          f"attributes are not the task, this warning can be ignored)", stacklevel=2)


class SameTaskGymEnv(_SameTask, GymEnv):
    """A ``GymEnv`` (a registered gymnasium id) whose soft reset replays the trial's reset seed (same task); keys:
    those of ``GymEnv``. An env instance: :class:`SameTaskGymWrapper`."""


class SameTaskGymWrapper(_SameTask, GymWrapper):
    """A ``GymWrapper`` (a gymnasium env instance, no registration needed) whose soft reset replays the trial's reset
    seed (same task), as :class:`SameTaskGymEnv`; keys: those of ``GymWrapper``."""
