"""Hidden-target-velocity HalfCheetah (AMAGO's ``HalfCheetahV4_MetaVelocity``; docs/domains/half_cheetah_vel.md)."""
from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
from torchrl.data import Unbounded
from torchrl.envs import GymWrapper, SerialEnv
from torchrl.envs.gym_like import default_info_dict_reader

from ..._optional import require
from ..transforms import TASK_ID_KEY

_FEATURE = "HalfCheetahVel (torchrl_amago.envs.libs.half_cheetah_vel)"
_PIP = '"gymnasium[mujoco]"'


class MetaVelocity(gym.Wrapper):
    """The hidden-target-velocity reward over a MuJoCo env; ``reset(options={"target_velocity": v})`` fixes it."""

    def __init__(self, env: gym.Env, task_min_velocity: float = 0.0, task_max_velocity: float = 3.0,
                 ctrl_cost_weight: float = 0.05, velocity_reward_weight: float = 1.0, max_episode_steps: int = 1000,
                 velocity_buckets: int = 0):
        super().__init__(env)
        if task_max_velocity < task_min_velocity:
            raise ValueError(f"task_max_velocity ({task_max_velocity}) < task_min_velocity ({task_min_velocity})")
        if max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be >= 1, got {max_episode_steps}")
        self.task_min_velocity, self.task_max_velocity = float(task_min_velocity), float(task_max_velocity)
        self.ctrl_cost_weight, self.velocity_reward_weight = float(ctrl_cost_weight), float(velocity_reward_weight)
        self.max_episode_steps, self.velocity_buckets = int(max_episode_steps), int(velocity_buckets)
        self.target_velocity = 0.5 * (self.task_min_velocity + self.task_max_velocity)
        self.t, self._vels = 0, []  # steps and x velocities of the current episode

    def _x(self) -> float:
        return float(self.env.unwrapped.data.qpos[0])

    @property
    def task_id(self) -> int:
        """Bucket of the current target in ``velocity_buckets`` equal bins of [min, max] (0 without buckets)."""
        if self.velocity_buckets <= 0:
            return 0
        span = self.task_max_velocity - self.task_min_velocity
        frac = 0.0 if span <= 0 else (self.target_velocity - self.task_min_velocity) / span
        return int(min(max(int(frac * self.velocity_buckets), 0), self.velocity_buckets - 1))

    def reset(self, *, seed=None, options=None):
        obs, info = self.env.reset(seed=seed, options=options)
        if options and "target_velocity" in options:
            self.target_velocity = float(options["target_velocity"])
        else:
            self.target_velocity = float(self.np_random.uniform(self.task_min_velocity, self.task_max_velocity))
        self.t, self._vels = 0, []
        info = dict(info, target_velocity=self.target_velocity)
        if self.velocity_buckets > 0:
            info["task_id"] = np.array([self.task_id], dtype=np.int64)
        return obs, info

    def step(self, action):
        a = np.asarray(action, dtype=np.float64)
        x_before = self._x()
        obs, _, _, _, info = self.env.step(action)
        x_vel = (self._x() - x_before) / float(self.env.unwrapped.dt)
        reward = -self.velocity_reward_weight * abs(x_vel - self.target_velocity) \
            - self.ctrl_cost_weight * float(np.sum(a * a))
        self.t += 1
        self._vels.append(x_vel)
        truncated = self.t >= self.max_episode_steps
        info = dict(info, x_velocity=x_vel, target_velocity=self.target_velocity)
        if self.velocity_buckets > 0:
            info["task_id"] = np.array([self.task_id], dtype=np.int64)
        if truncated:
            v = np.asarray(self._vels)
            info.update(mean_velocity=float(v.mean()), max_velocity=float(v.max()),
                        avg_last_50_velocity=float(v[-50:].mean()),
                        target_error_last_50=float(np.abs(v[-50:] - self.target_velocity).mean()))
        return obs, float(reward), False, bool(truncated), info


def _cheetah_class(version: str):
    require("mujoco", _PIP, _FEATURE)
    if version not in ("v4", "v5"):
        raise ValueError(f"HalfCheetah version must be 'v4' or 'v5', got {version!r}")
    mod = require(f"gymnasium.envs.mujoco.half_cheetah_{version}", _PIP, _FEATURE)
    return mod.HalfCheetahEnv


def make_half_cheetah_vel_gym(task_min_velocity: float = 0.0, task_max_velocity: float = 3.0, *,
                              version: str = "v4", ctrl_cost_weight: float = 0.05,
                              velocity_reward_weight: float = 1.0, max_episode_steps: int = 1000,
                              velocity_buckets: int = 0) -> MetaVelocity:
    """One gymnasium HalfCheetah-velocity env (``HalfCheetahEnv`` ``"v4"``, like the original, or ``"v5"``)."""
    inner = _cheetah_class(version)()
    return MetaVelocity(inner, task_min_velocity, task_max_velocity, ctrl_cost_weight=ctrl_cost_weight,
                        velocity_reward_weight=velocity_reward_weight, max_episode_steps=max_episode_steps,
                        velocity_buckets=velocity_buckets)


def velocity_bucket_names(task_min_velocity: float, task_max_velocity: float, buckets: int) -> list[str]:
    """Names of the ``task_id`` buckets, e.g. ``["vel_0.0-1.0", "vel_1.0-2.0", "vel_2.0-3.0"]``."""
    edges = np.linspace(task_min_velocity, task_max_velocity, buckets + 1)
    return [f"vel_{lo:.1f}-{hi:.1f}" for lo, hi in zip(edges[:-1], edges[1:])]


def wrap_torchrl(env: gym.Env) -> GymWrapper:
    """A velocity env as a TorchRL ``GymWrapper`` (reading ``task_id`` from info with velocity buckets)."""
    out = GymWrapper(env)
    if getattr(env, "velocity_buckets", 0) > 0:
        out.set_info_dict_reader(default_info_dict_reader(
            [TASK_ID_KEY], spec={TASK_ID_KEY: Unbounded((1,), dtype=torch.int64)}))
    return out


def make_half_cheetah_vel_env(num_envs: int, task_min_velocity: float = 0.0, task_max_velocity: float = 3.0, *,
                              version: str = "v4", velocity_buckets: int = 0, make_gym=None, **kw) -> SerialEnv:
    """``num_envs`` HalfCheetah-velocity envs in one ``SerialEnv`` (``make_gym()`` replaces the MuJoCo env)."""
    if not isinstance(num_envs, int) or num_envs < 1:
        raise ValueError(f"num_envs must be a positive int, got {num_envs!r}")
    if make_gym is None:
        _cheetah_class(version)  # fail here, naming the pip package, rather than inside SerialEnv

        def make_gym():
            return make_half_cheetah_vel_gym(task_min_velocity, task_max_velocity, version=version,
                                             velocity_buckets=velocity_buckets, **kw)
    return SerialEnv(num_envs, lambda: wrap_torchrl(make_gym()))
