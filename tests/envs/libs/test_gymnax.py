"""gymnax adapter: float32 observations, terminated vs truncated, Box actions rescaled from [-1, 1], batched through
the JAX bridge. The adapter logic runs on a numpy stand-in with gymnax's env API (no jax needed); the tests on real
gymnax envs skip when gymnax is missing."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from torchrl_amago.envs import make_amago_env
from torchrl_amago.envs.checks import check_amago_env
from torchrl_amago.envs.libs.gymnax import GymnaxFunctionalEnv, gymnax_env_names, make_gymnax_env
from torchrl_amago.envs.libs.jax_bridge import JaxBatchedEnv
from tests.missing_package import assert_missing_package_named


class Box:
    def __init__(self, low, high, shape, dtype=np.float32):
        self.low, self.high, self.shape, self.dtype = low, high, shape, dtype


class Discrete:
    def __init__(self, n):
        self.n, self.shape = n, ()


class ToyMemory:
    """gymnax-API stand-in (numpy): shows a bit at t=0, reward +1/-1 at t=`length` if the action equals the bit;
    terminates after that step; the time limit `max_steps_in_episode` truncates."""

    default_params = SimpleNamespace(length=3, max_steps_in_episode=100)

    def __init__(self, action_space=None):
        self._action_space = action_space or Discrete(2)
        self.last_action = None

    def observation_space(self, params):
        return Box(0, 1, (2,))

    def action_space(self, params):
        return self._action_space

    def _obs(self, state):
        return np.array([state["t"], (2 * state["bit"] - 1) * (state["t"] == 0)], dtype=np.float64)

    def reset_env(self, key, params):
        state = {"t": np.int32(0), "bit": np.int32(np.random.default_rng(int(key)).integers(0, 2))}
        return self._obs(state), state

    def step_env(self, key, state, action, params):
        self.last_action = np.asarray(action)
        at_query = state["t"] == params.length
        a = np.asarray(action)
        hit = (a == state["bit"]) if a.ndim == 0 else np.asarray(True)
        reward = np.where(at_query, np.where(hit, 1.0, -1.0), 0.0)
        new = {"t": np.int32(state["t"] + 1), "bit": state["bit"]}
        return self._obs(new), new, reward, np.asarray(at_query), {"discount": 1.0}

    def is_truncated(self, state, params):
        return np.asarray(state["t"] >= params.max_steps_in_episode)


def _env(n=3, params=None, gym_env=None, **kw):
    return JaxBatchedEnv(GymnaxFunctionalEnv(gym_env or ToyMemory(), params, backend="numpy"), n, backend="numpy",
                         **kw)


def test_observations_are_float32_and_episodes_terminate():
    env = _env(3, seed=0)
    assert env.observation_spec["observation"].dtype == torch.float32
    assert env.observation_spec["observation"].shape == (3, 2)
    ro = env.rollout(8, break_when_any_done=False)
    obs, term = ro["observation"], ro["next", "terminated"].squeeze(-1)
    assert obs.dtype == torch.float32
    # length 3: steps t=0..3, the 4th step terminates with reward +-1 depending on the bit shown at t=0
    assert term[:, 3].all() and term[:, 7].all() and not term[:, [0, 1, 2, 4, 5, 6]].any()
    assert not ro["next", "truncated"].any()
    bit = (obs[:, 0, 1] > 0).long()
    act = ro["action"][:, 3].argmax(-1)
    assert torch.equal(ro["next", "reward"][:, 3, 0], torch.where(act == bit, 1.0, -1.0))
    assert torch.equal(obs[:, 4, 0], torch.zeros(3))  # auto-reset after the end


def test_time_limit_is_truncation_not_termination():
    params = SimpleNamespace(length=10, max_steps_in_episode=2)
    env = _env(2, params=params)
    ro = env.rollout(4, break_when_any_done=False)
    trunc, term = ro["next", "truncated"].squeeze(-1), ro["next", "terminated"].squeeze(-1)
    assert trunc[:, 1].all() and trunc[:, 3].all() and not term.any()


def test_box_actions_are_rescaled_from_unit_range():
    toy = ToyMemory(action_space=Box(np.array([0.0, -4.0]), np.array([2.0, 4.0]), (2,)))
    env = _env(1, gym_env=toy)
    assert env.action_spec.space.low.tolist() == [[-1.0, -1.0]] and env.action_spec.space.high.tolist() == [[1.0, 1.0]]
    td = env.reset()
    td["action"] = torch.tensor([[-1.0, 0.5]])
    env.step(td)
    np.testing.assert_allclose(toy.last_action.reshape(-1), [0.0, 2.0])
    td = env.reset()
    td["action"] = torch.tensor([[3.0, -3.0]])  # clipped to the bounds
    env.step(td)
    np.testing.assert_allclose(toy.last_action.reshape(-1), [2.0, -4.0])


def test_full_amago_stack_on_the_stand_in():
    data = check_amago_env(make_amago_env(_env(3, seed=1)), steps_per_env=12)
    assert data["next", "done"].sum() >= 3


def test_missing_gymnax_names_the_pip_package(monkeypatch):
    assert_missing_package_named(monkeypatch, "gymnax", "pip install (gymnax|jax)",
                                 gymnax_env_names, lambda: make_gymnax_env("MemoryChain-bsuite", 2))


def test_real_memory_chain():
    pytest.importorskip("jax")
    pytest.importorskip("gymnax")
    assert "MemoryChain-bsuite" in gymnax_env_names()
    with pytest.raises(ValueError, match="unknown gymnax env"):
        make_gymnax_env("NoSuchEnv-v0", 2)
    with pytest.raises(ValueError, match="no field"):
        make_gymnax_env("MemoryChain-bsuite", 2, params={"no_such_field": 1})
    env = make_gymnax_env("MemoryChain-bsuite", 8, params={"memory_length": 3}, seed=0)
    data = check_amago_env(make_amago_env(env), steps_per_env=12)
    term = data["next", "terminated"].squeeze(-1)
    assert term[:, 3].all() and term[:, 7].all() and term.sum() == 8 * 3  # episodes of memory_length + 1 steps
    # the context (+-1) is shown only at the first step; the reward at the last step is +1 iff the action equals it
    ctx = (data["observation"][:, 0, 2] > 0).long()
    act = data["action"][:, 3].argmax(-1)
    assert torch.equal(data["next", "reward"][:, 3, 0], torch.where(act == ctx, 1.0, -1.0))
    assert torch.equal(data["next", "reward"][:, :3], torch.zeros(8, 3, 1))
    assert data["is_init"][:, 4].all() and (data["observation"][:, 4, 0] == 1).all()  # fresh episode
