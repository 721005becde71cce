"""dm_env -> TorchRL bridge: spec mapping, StepType/discount -> done/terminated/truncated, action mapping, a new env
per reset, and the full AMAGO stack. Runs on dm_env look-alikes (tests/envs/libs/alchemy_standin.py); the last
tests use the real ``dm_env`` package when it is installed."""

import numpy as np
import pytest
import torch
from torchrl.data import Binary, Bounded, Categorical, Composite, OneHot, Unbounded

from tests.envs.libs.alchemy_standin import Array, BoundedArray, DiscreteArray, Environment, StepType, TimeStep
from torchrl_amago.envs import make_amago_env
from torchrl_amago.envs.checks import check_amago_env
from torchrl_amago.envs.libs.dm_env_bridge import (ActionMap, DMEnvWrapper, dm_env_module, make_dm_env,
                                                   observation_spec_from_dm)
from tests.missing_package import assert_missing_package_named


class Counter(Environment):
    """obs {"pos": [t], "nest": {"flag": bool[2], "scalar": t}}, DiscreteArray(3) actions, reward = action + 1
    (None on the first MID step), LAST after `length` steps with discount `final_discount`."""

    def __init__(self, length=3, final_discount=0.0, tag=0):
        self.length, self.final_discount, self.tag = length, final_discount, tag
        self.actions, self.closed = [], False

    def observation_spec(self):
        return {"pos": Array((1,), np.float32), "nest": {"flag": Array((2,), bool), "scalar": Array((), np.int64)},
                "name": Array((), np.str_)}

    def action_spec(self):
        return DiscreteArray(3)

    def _obs(self):
        return {"pos": np.array([self.t + 10 * self.tag], np.float32),
                "nest": {"flag": np.array([self.t % 2 == 0, True]), "scalar": np.int64(self.t)}, "name": "x"}

    def reset(self):
        self.t = 0
        return TimeStep(StepType.FIRST, None, None, self._obs())

    def step(self, action):
        self.actions.append(action)
        self.t += 1
        reward = None if self.t == 1 else float(action) + 1.0
        if self.t >= self.length:
            return TimeStep(StepType.LAST, reward, self.final_discount, self._obs())
        return TimeStep(StepType.MID, reward, 1.0, self._obs())

    def close(self):
        self.closed = True


KEYS = ["pos", "nest/flag", "nest/scalar"]


def test_observation_specs_map_by_kind():
    s = observation_spec_from_dm(Array((4,), np.float32))
    assert isinstance(s, Unbounded) and s.shape == (4,) and s.dtype == torch.float32
    s = observation_spec_from_dm(BoundedArray((2,), np.float32, -1.0, [2.0, 3.0]))
    assert isinstance(s, Bounded) and s.space.low.tolist() == [-1, -1] and s.space.high.tolist() == [2, 3]
    s = observation_spec_from_dm(DiscreteArray(5))
    assert isinstance(s, Bounded) and s.shape == (1,) and s.dtype == torch.int32 and s.space.high.item() == 4
    s = observation_spec_from_dm(Array((3,), bool))
    assert isinstance(s, Binary) and s.shape == (3,)
    assert observation_spec_from_dm(Array((), np.float64)).shape == (1,)  # scalars become vectors
    with pytest.raises(ValueError, match="'name'.*string"):
        observation_spec_from_dm(Array((), np.str_), "name")


def test_action_maps():
    m = ActionMap(DiscreteArray(4))
    assert isinstance(m.spec, Categorical) and m.spec.n == 4 and m.to_native(torch.tensor(3)) == 3
    m = ActionMap(BoundedArray((), int, 2, 5))  # integer BoundedArray (dm_alchemy's kind): shifted by minimum
    assert m.spec.n == 4 and m.to_native(torch.tensor(0)) == 2 and m.to_native(torch.tensor(3)) == 5
    with pytest.raises(ValueError, match="out of range"):
        m.to_native(torch.tensor(4))
    m = ActionMap(BoundedArray((2,), np.int64, [0, 1], [1, 3]), categorical_action_encoding=False)
    assert isinstance(m.spec, OneHot) and m.spec.n == 2 * 3
    assert m.to_native(torch.nn.functional.one_hot(torch.tensor(5), 6)).tolist() == [1, 3]  # unravel (1, 2) + min
    assert m.to_native(torch.nn.functional.one_hot(torch.tensor(1), 6)).tolist() == [0, 2]
    m = ActionMap(BoundedArray((2,), np.float64, [-2.0, 0.0], [2.0, 10.0]))
    assert isinstance(m.spec, Bounded) and m.spec.space.low.tolist() == [-1, -1]
    np.testing.assert_allclose(m.to_native(torch.tensor([-1.0, 1.0])), [-2.0, 10.0])
    np.testing.assert_allclose(m.to_native(torch.tensor([0.5, 5.0])), [1.0, 10.0])  # clipped to [-1, 1] first
    assert m.to_native(torch.tensor([0.0, 0.0])).dtype == np.float64
    raw = ActionMap(BoundedArray((1,), np.float32, -2.0, 2.0), rescale_actions=False)
    assert raw.spec.space.high.tolist() == [2.0] and raw.to_native(torch.tensor([1.5])).tolist() == [1.5]
    assert isinstance(ActionMap(Array((3,), np.float32)).spec, Unbounded)


def test_wrapper_specs_keys_and_selection():
    env = DMEnvWrapper(Counter(), observation_keys=KEYS)
    assert isinstance(env.observation_spec, Composite)
    assert set(env.observation_spec.keys(True, True)) == {"pos", ("nest", "flag"), ("nest", "scalar")}
    assert env.observation_spec["nest", "scalar"].shape == (1,)
    assert isinstance(env.action_spec, Categorical) and env.action_spec.n == 3
    with pytest.raises(ValueError, match="'name'"):  # string observations must be left out
        DMEnvWrapper(Counter())
    with pytest.raises(KeyError, match="nope"):
        DMEnvWrapper(Counter(), observation_keys=["pos", "nope"])
    with pytest.raises(ValueError, match="exactly one"):
        DMEnvWrapper()
    with pytest.raises(ValueError, match="env_fn"):
        DMEnvWrapper(Counter(), recreate_on_reset=True)


class Single(Counter):
    def observation_spec(self):
        return BoundedArray((2,), np.float32, 0.0, 100.0)

    def _obs(self):
        return np.array([self.t, -self.t], np.float32)


@pytest.mark.parametrize("final_discount,terminal", [(0.0, True), (1.0, False), (0.5, False)])
def test_steps_last_discount_and_values(final_discount, terminal):
    inner = Counter(length=3, final_discount=final_discount)
    env = DMEnvWrapper(inner, observation_keys=KEYS)
    acts = iter([2, 0, 1, 1, 2, 0, 1])
    ro = env.rollout(7, lambda td: td.set("action", torch.tensor(next(acts))), break_when_any_done=False)
    assert inner.actions == [2, 0, 1, 1, 2, 0, 1]  # the index goes through unchanged (DiscreteArray min 0)
    assert ro["pos"][:, 0].tolist() == [0, 1, 2, 0, 1, 2, 0]  # auto-reset after LAST
    assert ro["next", "pos"][:, 0].tolist() == [1, 2, 3, 1, 2, 3, 1]
    assert ro["next", "nest", "flag"][:, 0].tolist() == [False, True, False, False, True, False, False]
    assert ro["next", "nest", "scalar"].dtype == torch.int64
    assert ro["next", "reward"][:, 0].tolist() == [0.0, 1.0, 2.0, 0.0, 3.0, 1.0, 0.0]  # None -> 0
    done = [False, False, True] * 2 + [False]
    assert ro["next", "done"][:, 0].tolist() == done
    assert ro["next", "terminated"][:, 0].tolist() == [d and terminal for d in done]
    assert ro["next", "truncated"][:, 0].tolist() == [d and not terminal for d in done]
    single = DMEnvWrapper(Single())
    assert list(single.observation_spec.keys()) == ["observation"]
    r = single.rollout(2, lambda td: td.set("action", torch.tensor(0)))
    assert r["next", "observation"].tolist() == [[1, -1], [2, -2]]


def test_new_env_per_reset_is_seeded():
    made = []

    def env_fn(seed):
        made.append(seed)
        return Counter(length=2, tag=len(made))

    env = DMEnvWrapper(env_fn=env_fn, recreate_on_reset=True, observation_keys=KEYS, seed=5)
    first = made[0]
    env.set_seed(3)
    ro = env.rollout(4, lambda td: td.set("action", torch.tensor(0)), break_when_any_done=False)
    assert len(made) == 3  # construction + 2 resets (rollout start, after the first LAST)
    assert ro["pos"][:, 0].tolist() == [20, 21, 30, 31]  # a fresh env (tag) per trial
    assert env.dm_env.tag == 3 and env.dm_env is not None
    seeds = made[1:]
    made.clear()
    env2 = DMEnvWrapper(env_fn=env_fn, recreate_on_reset=True, observation_keys=KEYS, seed=5)
    assert made[0] == first
    env2.set_seed(3)
    env2.rollout(4, lambda td: td.set("action", torch.tensor(0)), break_when_any_done=False)
    assert made[1:] == seeds and len(set(seeds)) == 2  # reproducible from set_seed, different per reset


def test_old_env_is_closed_on_recreate():
    envs = []

    def env_fn(seed):
        envs.append(Counter(length=2))
        return envs[-1]

    env = DMEnvWrapper(env_fn=env_fn, recreate_on_reset=True, observation_keys=KEYS)
    env.reset()
    assert envs[0].closed and not envs[1].closed
    env.close()
    assert envs[1].closed


def test_full_amago_stack_passes_checks():
    env = make_amago_env(make_dm_env(lambda: DMEnvWrapper(Counter(length=4), observation_keys=KEYS), 2))
    try:
        data = check_amago_env(env, steps_per_env=10)
        assert data["next", "done"].sum() == 2 * 2  # 10 steps of 4-step trials: 2 ends per env
        assert data["time_idx"][0, :5, 0].tolist() == [0, 1, 2, 3, 0]
    finally:
        if not env.is_closed:  # the Collector in check_amago_env closes it
            env.close()
    with pytest.raises(ValueError, match="num_envs"):
        make_dm_env(lambda: None, 0)


def test_missing_dm_env_names_the_pip_package(monkeypatch):
    assert_missing_package_named(monkeypatch, "dm_env", "pip install dm-env", dm_env_module)


# ---------------------------------------------------------------- the real dm_env package (skipped without it)
def test_real_dm_env_environment():
    dm_env = pytest.importorskip("dm_env")
    from dm_env import specs

    class Walk(dm_env.Environment):
        def reset(self):
            self.x = 0
            return dm_env.restart(np.array([0.0], np.float32))

        def step(self, action):
            self.x += int(action) - 1
            obs = np.array([self.x], np.float32)
            if abs(self.x) >= 2:
                return dm_env.termination(1.0, obs)
            if self.x == 1:
                return dm_env.truncation(0.5, obs)
            return dm_env.transition(0.0, obs)

        def observation_spec(self):
            return specs.BoundedArray((1,), np.float32, -2.0, 2.0)

        def action_spec(self):
            return specs.DiscreteArray(3)

    assert dm_env_module() is dm_env
    env = DMEnvWrapper(Walk())
    assert isinstance(env.action_spec, Categorical) and env.action_spec.n == 3
    acts = iter([0, 0, 2, 1, 2])
    ro = env.rollout(5, lambda td: td.set("action", torch.tensor(next(acts))), break_when_any_done=False)
    assert ro["next", "observation"][:, 0].tolist() == [-1, -2, 1, 0, 1]
    assert ro["next", "terminated"][:, 0].tolist() == [False, True, False, False, False]
    assert ro["next", "truncated"][:, 0].tolist() == [False, False, True, False, True]  # truncation: discount 1
    assert ro["next", "reward"][:, 0].tolist() == [0.0, 1.0, 0.5, 0.0, 0.5]
    env = make_amago_env(make_dm_env(lambda: DMEnvWrapper(Walk()), 2))
    try:
        check_amago_env(env, steps_per_env=12)
    finally:
        if not env.is_closed:  # the Collector in check_amago_env closes it
            env.close()
