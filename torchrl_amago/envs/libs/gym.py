"""Any gymnasium env as a TorchRL env in the form AMAGO acts in; bounded ``Box`` actions are rescaled to ``[-1, 1]``
inside the gym env (``RescaleAction``). ``SameTaskGymEnv`` keeps the task across a ``MetaTrial`` trial."""
from __future__ import annotations

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


class SameTaskGymEnv(GymEnv):
    """A ``GymEnv`` whose soft reset replays the trial's reset seed (same task); keys: those of ``GymEnv``."""

    supports_soft_reset = True

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
        return super()._reset(tensordict, **kwargs)
