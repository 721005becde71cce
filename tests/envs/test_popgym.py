"""POPGym adapter: flat one-hot observations + timer, discrete actions, terminated |= truncated, TorchRL specs.

The wrapper tests use a hand-made gymnasium env (no popgym needed); the tests on real popgym envs skip when the
package is missing.
"""

import gymnasium as gym
import numpy as np
import pytest
import torch
from torchrl.envs.utils import check_env_specs

from torchrl_amago.envs import make_amago_env
from torchrl_amago.envs.libs.popgym import POPGymObservation, make_popgym_env, popgym_env_names, popgym_num_actions
from tests.missing_package import assert_missing_package_named


class _Toy(gym.Env):
    """Obs Tuple(Discrete(2), Discrete(3)); MultiDiscrete([2, 3]) actions; truncates after 3 steps."""

    observation_space = gym.spaces.Tuple((gym.spaces.Discrete(2), gym.spaces.Discrete(3)))
    action_space = gym.spaces.MultiDiscrete([2, 3])

    def reset(self, seed=None, options=None):
        self.t = 0
        self.last = None
        return (1, 2), {}

    def step(self, action):
        self.t += 1
        self.last = tuple(int(a) for a in action)
        return (0, self.t % 3), 0.5, False, self.t >= 3, {}


def test_wrapper_flattens_one_hot_appends_timer_and_terminates_on_truncation():
    env = POPGymObservation(_Toy())
    assert env.observation_space.shape == (2 + 3 + 1,) and env.observation_space.dtype == np.float32
    assert env.action_space == gym.spaces.Discrete(6)
    obs, _ = env.reset()
    np.testing.assert_array_equal(obs, [0, 1, 0, 0, 1, 0.0])
    obs, r, term, trunc, _ = env.step(5)  # flat index 5 of nvec [2, 3] -> (1, 2)
    assert env.env.last == (1, 2)
    np.testing.assert_allclose(obs, [1, 0, 0, 1, 0, 0.001], rtol=1e-6)
    assert (r, term, trunc) == (0.5, False, False)
    env.step(0)
    assert env.env.last == (0, 0)
    obs, _, term, trunc, _ = env.step(3)
    assert env.env.last == (1, 0) and term and trunc and obs[-1] == pytest.approx(0.003)
    keep = POPGymObservation(_Toy(), truncated_is_done=False)
    keep.reset()
    for _ in range(3):
        _, _, term, trunc, _ = keep.step(0)
    assert trunc and not term
    obs, _ = env.reset()
    assert obs[-1] == 0.0  # the timer restarts with the episode


def test_box_actions_are_rescaled_to_unit_range():
    class _Box(_Toy):
        action_space = gym.spaces.Box(-2.0, 4.0, (1,), dtype=np.float32)

        def step(self, action):
            self.last = np.asarray(action)
            return (0, 0), 0.0, False, False, {}

    env = POPGymObservation(_Box())
    assert env.action_space.low.tolist() == [-1.0] and env.action_space.high.tolist() == [1.0]
    env.reset()
    env.step(np.array([-1.0]))
    assert env.env.last.tolist() == [-2.0]
    env.step(np.array([0.5]))
    assert env.env.last.tolist() == [2.5]


def test_missing_popgym_names_the_pip_package(monkeypatch):
    assert_missing_package_named(monkeypatch, "popgym", "pip install popgym",
                                 popgym_env_names, lambda: make_popgym_env("RepeatPreviousEasy", 2))


def test_real_popgym_env_specs_and_values():
    pytest.importorskip("popgym")
    names = popgym_env_names()
    assert "RepeatPreviousEasy" in names and "MineSweeperHard" in names
    assert popgym_num_actions("BattleshipEasy") == 64 and popgym_num_actions("MineSweeperEasy") == 16  # 8x8, 4x4
    assert popgym_num_actions("ConcentrationEasy") == 52 and popgym_num_actions("PositionOnlyPendulumEasy") is None
    with pytest.raises(ValueError, match="unknown POPGym env 'NoSuchGame'"):
        make_popgym_env("NoSuchGame", 2)
    env = make_amago_env(make_popgym_env("RepeatPreviousEasy", 2))
    try:
        check_env_specs(env)
        assert env.batch_size == torch.Size([2])
        assert env.observation_spec["observation"].shape == (2, 5)  # one-hot of 4 suits + timer
        env.set_seed(0)
        ro = env.rollout(60, break_when_any_done=False)
        obs = ro["observation"]
        assert torch.equal(obs[..., :4].sum(-1), torch.ones(2, 60))  # exactly one suit shown per step
        # timer/1000 counts steps since the reset; RepeatPreviousEasy episodes last 51 steps, then terminate
        assert torch.allclose(obs[:, :51, -1], torch.arange(51).float().expand(2, 51) / 1000)
        term = ro["next", "terminated"][..., 0]
        assert term[:, 50].all() and not term[:, :50].any()
        assert ro["is_init"][:, 51, 0].all() and obs[:, 51, -1].eq(0).all()
    finally:
        env.close()


def test_popgym_truncation_becomes_termination():
    pytest.importorskip("popgym")
    env = make_popgym_env("MineSweeperEasy", 1)  # MineSweeper ends by truncation after its step budget
    try:
        env.set_seed(0)
        # always reveal cell 0: the first step may reveal, the repeats are wasted until the budget truncates
        ro = env.rollout(40, lambda td: td.set("action", torch.nn.functional.one_hot(torch.zeros(1, dtype=torch.long),
                                                                                      16).bool()),
                         break_when_any_done=False)
        trunc, term = ro["next", "truncated"][..., 0], ro["next", "terminated"][..., 0]
        assert trunc.any()
        assert torch.equal(term | trunc, term)  # every truncation is also a termination
    finally:
        env.close()
