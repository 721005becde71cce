"""A small stand-in for dm_alchemy's symbolic Alchemy (not installable from PyPI) with the same dm_env interface.

Same specs as ``get_symbolic_alchemy_level(...)``: observation ``{"symbolic_obs": Array((39,), float32)}`` (3 stone
slots x [3 perceived coords, reward / 15, used] + 12 potion slots x [colour / 3 - 1, used]; empty slots read
[2, 2, 2, 2, 1] and [1, 1]), action ``BoundedArray((), int, 0, 39)`` (0 no-op; ``1 + 13 s`` stone s into the
cauldron; ``2 + 13 s + p`` stone s into potion p). One dm_env episode runs ``num_trials`` Alchemy trials of
``max_steps_per_trial`` steps (fresh stones and potions, same hidden chemistry), then ``LAST`` with discount 0.

Simplified chemistry: stone latent coords in {-1, 1}^3, value = sum (15 for +3); each of the 6 potion colours sets
one axis to +1 or -1 (a hidden permutation per level). Uses dm_env's own classes when dm_env is installed and
look-alikes with the same names otherwise; :func:`install_fake_dm_alchemy` puts it in ``sys.modules`` as
``dm_alchemy.symbolic_alchemy`` (and a fake ``dm_env`` if the real one is missing).
"""
from __future__ import annotations

import collections
import enum
import sys
import types

import numpy as np

try:
    import dm_env as _dm_env
    from dm_env import specs as _specs

    StepType, TimeStep, Array, BoundedArray, DiscreteArray = (_dm_env.StepType, _dm_env.TimeStep, _specs.Array,
                                                              _specs.BoundedArray, _specs.DiscreteArray)
    Environment = _dm_env.Environment
    REAL_DM_ENV = True
except ImportError:
    REAL_DM_ENV = False

    class StepType(enum.IntEnum):
        FIRST = 0
        MID = 1
        LAST = 2

    class TimeStep(collections.namedtuple("TimeStep", ["step_type", "reward", "discount", "observation"])):
        def first(self):
            return self.step_type == StepType.FIRST

        def mid(self):
            return self.step_type == StepType.MID

        def last(self):
            return self.step_type == StepType.LAST

    class Array:
        def __init__(self, shape, dtype, name=None):
            self.shape, self.dtype, self.name = tuple(shape), np.dtype(dtype), name

    class BoundedArray(Array):
        def __init__(self, shape, dtype, minimum, maximum, name=None):
            super().__init__(shape, dtype, name)
            self.minimum, self.maximum = np.asarray(minimum, self.dtype), np.asarray(maximum, self.dtype)

    class DiscreteArray(BoundedArray):
        def __init__(self, num_values, dtype=np.int32, name=None):
            super().__init__((), dtype, 0, num_values - 1, name)
            self.num_values = num_values

    class Environment:
        def reward_spec(self):
            return Array((), float, "reward")

        def close(self):
            pass

MAX_STONES, MAX_POTIONS, NUM_COLOURS = 3, 12, 6
OBS_DIM = MAX_STONES * 5 + MAX_POTIONS * 2
NUM_ACTIONS = MAX_STONES * (MAX_POTIONS + 1) + 1


def stone_value(coords) -> float:
    s = float(np.sum(coords))
    return 15.0 if s == 3 else s


class FakeSymbolicAlchemy(Environment):
    def __init__(self, level_name, seed=None, num_trials=10, max_steps_per_trial=20):
        self.level_name = level_name
        self.rng = np.random.RandomState(seed)
        self.num_trials, self.max_steps_per_trial = num_trials, max_steps_per_trial
        self.closed = False
        self._last = True

    def observation_spec(self):
        return {"symbolic_obs": Array((OBS_DIM,), np.float32, "symbolic_obs")}

    def action_spec(self):
        return BoundedArray((), int, 0, NUM_ACTIONS - 1, "action")

    def close(self):
        self.closed = True

    def _new_trial(self):
        self.stones = [self.rng.choice([-1, 1], 3).astype(np.float32) for _ in range(MAX_STONES)]
        self.stone_used = [False] * MAX_STONES
        self.potions = list(self.rng.randint(NUM_COLOURS, size=MAX_POTIONS))
        self.potion_used = [False] * MAX_POTIONS
        self.steps_this_trial = 0

    def observation(self):
        st = np.tile(np.array([2, 2, 2, 2, 1], np.float32), (MAX_STONES, 1))
        for i, c in enumerate(self.stones):
            if not self.stone_used[i]:
                st[i] = [*c, stone_value(c) / 15.0, 0.0]
        po = np.tile(np.array([1, 1], np.float32), (MAX_POTIONS, 1))
        for j, col in enumerate(self.potions):
            if not self.potion_used[j]:
                po[j] = [col / 3.0 - 1.0, 0.0]
        return {"symbolic_obs": np.concatenate([st.reshape(-1), po.reshape(-1)]).astype(np.float32)}

    def reset(self):
        perm = self.rng.permutation(NUM_COLOURS)  # the hidden chemistry: colour -> (axis, direction)
        self.effect = {int(c): (int(perm[c]) // 2, 1.0 if perm[c] % 2 == 0 else -1.0) for c in range(NUM_COLOURS)}
        self.trial = 0
        self._last = False
        self._new_trial()
        return TimeStep(StepType.FIRST, None, None, self.observation())

    def step(self, action):
        if self._last:
            return self.reset()
        a = int(action) - 1
        reward = 0.0
        if a >= 0:
            s, target = a // (MAX_POTIONS + 1), a % (MAX_POTIONS + 1) - 1
            if s < MAX_STONES and not self.stone_used[s]:
                if target < 0:
                    reward = stone_value(self.stones[s])
                    self.stone_used[s] = True
                elif not self.potion_used[target]:
                    axis, direction = self.effect[self.potions[target]]
                    self.stones[s][axis] = direction
                    self.potion_used[target] = True
        self.steps_this_trial += 1
        if self.steps_this_trial >= self.max_steps_per_trial:
            self.trial += 1
            if self.trial >= self.num_trials:
                self._last = True
            else:
                self._new_trial()
        if self._last:
            return TimeStep(StepType.LAST, reward, 0.0, self.observation())
        return TimeStep(StepType.MID, reward, 1.0, self.observation())


class FakeLevels:
    """``get_symbolic_alchemy_level`` of the fake module; records every call."""

    def __init__(self):
        self.calls = []
        self.envs = []

    def __call__(self, level_name, seed=None, num_trials=10, max_steps_per_trial=20, **kw):
        self.calls.append((level_name, seed, num_trials, max_steps_per_trial))
        env = FakeSymbolicAlchemy(level_name, seed, num_trials, max_steps_per_trial)
        self.envs.append(env)
        return env


def install_fake_dm_alchemy(monkeypatch) -> FakeLevels:
    """Make ``import dm_alchemy.symbolic_alchemy`` give the stand-in (and ``dm_env`` a fake if missing)."""
    levels = FakeLevels()
    pkg = types.ModuleType("dm_alchemy")
    mod = types.ModuleType("dm_alchemy.symbolic_alchemy")
    mod.get_symbolic_alchemy_level = levels
    pkg.symbolic_alchemy = mod
    monkeypatch.setitem(sys.modules, "dm_alchemy", pkg)
    monkeypatch.setitem(sys.modules, "dm_alchemy.symbolic_alchemy", mod)
    if not REAL_DM_ENV:
        fake = types.ModuleType("dm_env")
        fake.StepType, fake.TimeStep, fake.Environment = StepType, TimeStep, Environment
        monkeypatch.setitem(sys.modules, "dm_env", fake)
    return levels
