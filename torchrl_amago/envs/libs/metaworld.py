"""Meta-World k-shot meta-RL trials as batched TorchRL envs, like AMAGO's ``Metaworld``: attempts restarted on the
same step, writing ``episode_*`` and ``task_id`` (docs/domains/metaworld.md). ``pip install metaworld``."""
from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torchrl.data import Unbounded
from torchrl.envs import GymWrapper, SerialEnv
from torchrl.envs.gym_like import default_info_dict_reader

from ..._optional import require
from ...suites import canonical_benchmark_name
from ..transforms import (EPISODE_COUNT_KEY, EPISODE_END_KEY, EPISODE_RETURN_KEY, EPISODE_SUCCESS_KEY, TASK_ID_KEY,
                          episode_stats_spec)

_FEATURE = "Meta-World envs (torchrl_amago.envs.libs.metaworld)"
INFO_KEYS = (EPISODE_END_KEY, EPISODE_RETURN_KEY, EPISODE_COUNT_KEY, EPISODE_SUCCESS_KEY, TASK_ID_KEY)


def _metaworld():
    return require("metaworld", "metaworld", _FEATURE)


def make_benchmark(benchmark: str, seed: int | None = None):
    """The Meta-World benchmark object (``metaworld.ML1(name)``, ``ML10()`` or ``ML45()``), seeded."""
    mw = _metaworld()
    name = canonical_benchmark_name(benchmark)
    if name in ("ml10", "ml45"):
        return getattr(mw, name.upper())(seed=seed)
    known = sorted(mw.ALL_V3_ENVIRONMENTS)
    if name not in known:
        raise ValueError(f"unknown Meta-World benchmark {benchmark!r}: use 'ml10', 'ml45' or a task name, one of "
                         f"{known}")
    return mw.ML1(name, seed=seed)


def _split(benchmark, split: str):
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    classes = benchmark.train_classes if split == "train" else benchmark.test_classes
    tasks = benchmark.train_tasks if split == "train" else benchmark.test_tasks
    return classes, tasks


def metaworld_task_names(benchmark, split: str = "train") -> list[str]:
    """Task class names of a benchmark split, in ``task_id`` order (``benchmark``: a name or a benchmark object)."""
    bench = make_benchmark(benchmark) if isinstance(benchmark, str) else benchmark
    return list(_split(bench, split)[0])


class KShotMetaworld(gym.Env):
    """One k-shot trial env over a benchmark split; ``reset(options={"task": (name, i)})`` fixes the task."""

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, benchmark, split: str = "train", k_episodes: int = 3, episode_length: int = 500):
        if not isinstance(k_episodes, int) or k_episodes < 1:
            raise ValueError(f"k_episodes must be a positive int, got {k_episodes!r}")
        if not isinstance(episode_length, int) or episode_length < 1:
            raise ValueError(f"episode_length must be a positive int, got {episode_length!r}")
        classes, tasks = _split(benchmark, split)
        self.split, self.k_episodes, self.episode_length = split, k_episodes, episode_length
        self.classes = dict(classes)
        self.task_names = list(self.classes)
        if not self.task_names:
            raise ValueError(f"the benchmark's {split} split has no task classes")
        self.tasks = {n: [t for t in tasks if t.env_name == n] for n in self.task_names}
        empty = [n for n, ts in self.tasks.items() if not ts]
        if empty:
            raise ValueError(f"no {split} tasks for task classes {empty}")
        self._envs: dict[str, gym.Env] = {}
        probe = self._env(self.task_names[0])
        inner = probe.observation_space
        self.inner_obs_dim = int(np.prod(inner.shape))
        low = np.append(np.asarray(inner.low, np.float32).reshape(-1), 0.0).astype(np.float32)
        high = np.append(np.asarray(inner.high, np.float32).reshape(-1), 1.0).astype(np.float32)
        self.observation_space = gym.spaces.Box(low, high, dtype=np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, probe.action_space.shape, dtype=np.float32)
        max_len = getattr(probe, "max_path_length", None)
        if max_len is not None and episode_length > int(max_len):
            raise ValueError(f"episode_length {episode_length} exceeds the envs' max_path_length {max_len}")
        self.task_name, self.task_id, self.env = self.task_names[0], 0, probe
        self._count = self._ep_steps = 0
        self._ep_return, self._ep_success = 0.0, False

    def _env(self, name: str) -> gym.Env:
        if name not in self._envs:
            self._envs[name] = self.classes[name]()
        return self._envs[name]

    def _obs(self, obs, soft: bool) -> np.ndarray:
        return np.append(np.asarray(obs, np.float32).reshape(-1), np.float32(soft)).astype(np.float32)

    def _info(self, end=False, ret=0.0, success=False) -> dict:
        return {EPISODE_END_KEY: np.array([end]), EPISODE_RETURN_KEY: np.array([ret], np.float32),
                EPISODE_COUNT_KEY: np.array([self._count], np.int64),
                EPISODE_SUCCESS_KEY: np.array([success]), TASK_ID_KEY: np.array([self.task_id], np.int64)}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if options and "task" in options:
            name, i = options["task"]
            if name not in self.tasks:
                raise ValueError(f"unknown task {name!r}; this split has {self.task_names}")
        else:
            name = self.task_names[int(self.np_random.integers(len(self.task_names)))]
            i = int(self.np_random.integers(len(self.tasks[name])))
        self.task_name, self.task_id = name, self.task_names.index(name)
        self.env = self._env(name)
        self.env.set_task(self.tasks[name][i])
        obs, _ = self.env.reset(seed=None if seed is None else int(self.np_random.integers(2 ** 31)))
        self._count = self._ep_steps = 0
        self._ep_return, self._ep_success = 0.0, False
        return self._obs(obs, True), self._info()

    def step(self, action):
        a = np.clip(np.asarray(action, np.float32), -1.0, 1.0)
        obs, reward, terminated, truncated, info = self.env.step(a)
        reward = float(reward)
        self._ep_steps += 1
        self._ep_return += reward
        self._ep_success = self._ep_success or bool(float(info.get("success", 0.0)) >= 1.0)
        soft = False
        if self._ep_steps >= self.episode_length or terminated or truncated:
            ret, succ = self._ep_return, self._ep_success
            self._count += 1
            self._ep_steps, self._ep_return, self._ep_success = 0, 0.0, False
            out_info = self._info(True, ret, succ)
            if self._count >= self.k_episodes:
                return self._obs(obs, False), reward, True, False, out_info
            obs, _ = self.env.reset()  # same task: set_task fixed the variation, reset keeps it
            soft = True
        else:
            out_info = self._info()
        return self._obs(obs, soft), reward, False, False, out_info


def info_specs() -> dict:
    """Per-env specs of the bookkeeping keys the adapter reads from ``info``."""
    return {**episode_stats_spec((), success=True), TASK_ID_KEY: Unbounded((1,), dtype=torch.int64)}


def wrap_torchrl(env: gym.Env) -> GymWrapper:
    """A :class:`KShotMetaworld` as an unbatched TorchRL ``GymWrapper`` that also reads the bookkeeping keys."""
    out = GymWrapper(env)
    out.set_info_dict_reader(default_info_dict_reader(list(INFO_KEYS), spec=info_specs()))
    return out


def make_metaworld_env(benchmark: str | Any, num_envs: int, split: str = "train", k_episodes: int = 3,
                       episode_length: int = 500, seed: int | None = None) -> SerialEnv:
    """``num_envs`` k-shot trial envs of ``"ml10"``, ``"ml45"``, a task name or a benchmark, in a ``SerialEnv``."""
    if not isinstance(num_envs, int) or num_envs < 1:
        raise ValueError(f"num_envs must be a positive int, got {num_envs!r}")
    bench = make_benchmark(benchmark, seed) if isinstance(benchmark, str) else benchmark
    _split(bench, split)  # fail here on a bad split
    return SerialEnv(num_envs, lambda: wrap_torchrl(KShotMetaworld(bench, split, k_episodes, episode_length)))
