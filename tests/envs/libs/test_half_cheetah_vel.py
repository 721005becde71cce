"""HalfCheetah-velocity adapter: hidden target velocity per reset, reward from the physics state, 1000-step
truncation, velocity-bucket task ids, TorchRL specs.

The logic tests use a stand-in physics env (MuJoCo-like ``unwrapped.data.qpos`` and ``dt``, HalfCheetah's spaces);
the tests on the real MuJoCo env skip when ``mujoco`` is missing.
"""
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
import torch

from torchrl_amago.envs import make_amago_env
from torchrl_amago.envs.checks import check_amago_env
from torchrl_amago.envs.libs.half_cheetah_vel import MetaVelocity, make_half_cheetah_vel_env, \
    make_half_cheetah_vel_gym, velocity_bucket_names
from tests.missing_package import assert_missing_package_named


class _FakeCheetah(gym.Env):
    """17-d float64 obs, Box(-1, 1, (6,)); the root moves by ``dx = 0.1 * action[0]`` per step (dt 0.05, so
    x_vel = 2 * action[0]); its own reward (999) must be ignored by the wrapper."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (17,), dtype=np.float64)
    action_space = gym.spaces.Box(-1.0, 1.0, (6,), dtype=np.float32)
    dt = 0.05

    def __init__(self):
        self.data = SimpleNamespace(qpos=np.zeros(9))

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.data.qpos = np.zeros(9)
        self.data.qpos[0] = 5.0  # a non-zero start: the velocity is a difference, not a position
        return np.full(17, 0.5), {}

    def step(self, action):
        self.data.qpos[0] += 0.1 * float(action[0])
        return np.full(17, self.data.qpos[0]), 999.0, False, False, {}


def _env(**kw):
    return MetaVelocity(_FakeCheetah(), **kw)


def test_reward_matches_hand_computed_values():
    env = _env(task_min_velocity=0.0, task_max_velocity=3.0)
    obs, info = env.reset(seed=0, options={"target_velocity": 1.5})
    assert obs.shape == (17,) and info["target_velocity"] == 1.5
    a = np.array([0.5, 0.2, -0.4, 0.0, 1.0, -1.0], dtype=np.float32)
    _, r, term, trunc, info = env.step(a)
    x_vel = 2 * 0.5  # dx = 0.05 over dt = 0.05
    ctrl = 0.05 * (0.25 + 0.04 + 0.16 + 0 + 1 + 1)
    assert info["x_velocity"] == pytest.approx(x_vel)
    assert r == pytest.approx(-abs(x_vel - 1.5) - ctrl, rel=1e-6)
    assert (term, trunc) == (False, False)
    _, r, _, _, info = env.step(np.array([1.0, 0, 0, 0, 0, 0], dtype=np.float32))  # x_vel 2 > target
    assert r == pytest.approx(-abs(2.0 - 1.5) - 0.05 * 1.0, rel=1e-6)
    _, r, _, _, _ = env.step(np.array([-1.0, 0, 0, 0, 0, 0], dtype=np.float32))  # running backwards
    assert r == pytest.approx(-abs(-2.0 - 1.5) - 0.05, rel=1e-6)
    w = _env(ctrl_cost_weight=0.1, velocity_reward_weight=2.0)
    w.reset(options={"target_velocity": 0.0})
    _, r, _, _, _ = w.step(np.array([0.5, 0.5, 0, 0, 0, 0], dtype=np.float32))
    assert r == pytest.approx(-2.0 * 1.0 - 0.1 * 0.5, rel=1e-6)


def test_target_redrawn_per_reset_in_range_and_seeded():
    env = _env(task_min_velocity=1.0, task_max_velocity=2.0)
    env.reset(seed=3)
    targets = [env.reset()[1]["target_velocity"] for _ in range(200)]
    assert min(targets) >= 1.0 and max(targets) <= 2.0 and np.std(targets) > 0.2
    assert len(set(targets)) == 200
    a, b = _env(), _env()
    assert a.reset(seed=11)[1]["target_velocity"] == b.reset(seed=11)[1]["target_velocity"]
    with pytest.raises(ValueError, match="task_max_velocity"):
        _env(task_min_velocity=2.0, task_max_velocity=1.0)


def test_truncates_after_max_steps_never_terminates_and_reports_metrics():
    env = _env(max_episode_steps=60)
    env.reset(options={"target_velocity": 1.0})
    for t in range(60):
        a = np.zeros(6, np.float32)
        a[0] = 0.25 if t < 10 else 0.5  # x_vel 0.5 for 10 steps, then 1.0
        _, _, term, trunc, info = env.step(a)
        assert not term and trunc == (t == 59)
    assert info["mean_velocity"] == pytest.approx((10 * 0.5 + 50 * 1.0) / 60)
    assert info["max_velocity"] == pytest.approx(1.0)
    assert info["avg_last_50_velocity"] == pytest.approx(1.0)
    assert info["target_error_last_50"] == pytest.approx(0.0, abs=1e-9)


def test_velocity_buckets_and_names():
    env = _env(task_min_velocity=0.0, task_max_velocity=3.0, velocity_buckets=3)
    for v, b in ((0.0, 0), (0.99, 0), (1.0, 1), (2.5, 2), (3.0, 2)):
        _, info = env.reset(options={"target_velocity": v})
        assert info["task_id"].tolist() == [b], v
    assert velocity_bucket_names(0.0, 3.0, 3) == ["vel_0.0-1.0", "vel_1.0-2.0", "vel_2.0-3.0"]
    assert "task_id" not in _env().reset()[1]


def test_torchrl_stack_over_stand_in():
    def make_gym():
        return MetaVelocity(_FakeCheetah(), 0.0, 3.0, max_episode_steps=7, velocity_buckets=3)

    env = make_amago_env(make_half_cheetah_vel_env(2, make_gym=make_gym))
    try:
        check_amago_env(env, steps_per_env=16)
        assert env.observation_spec["observation"].shape == (2, 17)
        assert env.observation_spec["observation"].dtype == torch.float32  # DoubleToFloat
        assert env.action_spec.shape == (2, 6)
        env.set_seed(0)
        act = torch.zeros(2, 6)
        act[:, 0] = 0.5
        ro = env.rollout(8, lambda td: td.set("action", act.clone()), break_when_any_done=False)
        n = ro["next"]
        assert n["truncated"][:, 6, 0].all() and not n["terminated"].any() and not n["done"][:, :6].any()
        assert ro["is_init"][:, 7, 0].all() and ro["time_idx"][:, 7, 0].eq(0).all()
        # rewards: x_vel = 1.0 everywhere; the target is hidden but fixed per trial and its bucket is the task id
        r = n["reward"][:, :7, 0]
        assert torch.allclose(r, r[:, :1].expand_as(r))
        bucket = n["task_id"][:, 0, 0]
        assert ((bucket >= 0) & (bucket <= 2)).all() and (n["task_id"][:, :7, 0] == bucket[:, None]).all()
        ctrl = 0.05 * 0.25
        target_dist = -(r[:, 0] + ctrl)  # = |1 - target| with target in [0, 3]
        assert ((target_dist >= 0) & (target_dist <= 2.0 + 1e-5)).all()
    finally:
        env.close()


def test_missing_mujoco_names_the_pip_package(monkeypatch):
    assert_missing_package_named(monkeypatch, "mujoco", r'pip install "gymnasium\[mujoco\]"',
                                 lambda: make_half_cheetah_vel_env(2), make_half_cheetah_vel_gym)


def test_real_mujoco_half_cheetah_vel():
    pytest.importorskip("mujoco")
    with pytest.raises(ValueError, match="version must be 'v4' or 'v5'"):
        make_half_cheetah_vel_gym(version="v1")
    g = make_half_cheetah_vel_gym(0.0, 3.0, max_episode_steps=20)
    assert g.observation_space.shape == (17,) and g.action_space.shape == (6,)
    assert g.unwrapped.dt == pytest.approx(0.05)
    g.reset(seed=0, options={"target_velocity": 2.0})
    for _ in range(20):
        a = g.action_space.sample()
        x0 = float(g.unwrapped.data.qpos[0])
        _, r, term, trunc, info = g.step(a)
        vel = (float(g.unwrapped.data.qpos[0]) - x0) / 0.05
        assert r == pytest.approx(-abs(vel - 2.0) - 0.05 * float(np.sum(np.square(a))), rel=1e-5)
        assert info["x_velocity"] == pytest.approx(vel)
        assert not term
    assert trunc
    env = make_amago_env(make_half_cheetah_vel_env(2, max_episode_steps=10, velocity_buckets=3))
    try:
        check_amago_env(env, steps_per_env=12)
        env.set_seed(0)
        ro = env.rollout(11, break_when_any_done=False)
        assert ro["next", "truncated"][:, 9, 0].all() and not ro["next", "terminated"].any()
        assert ro["observation"].shape == (2, 11, 17) and ro["observation"].dtype == torch.float32
    finally:
        env.close()
