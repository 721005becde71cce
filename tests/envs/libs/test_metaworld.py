"""Meta-World k-shot adapter: k attempts per trial on one task, same-step soft resets with a flag, per-attempt
success bookkeeping, task ids, TorchRL specs.

The logic tests use a stand-in benchmark (same spaces and API as Meta-World's: ``train_classes`` / ``train_tasks`` /
``test_classes`` / ``test_tasks``, ``set_task``, ``max_path_length``, ``info["success"]``); the tests on the real
package skip when ``metaworld`` is missing.
"""
from collections import namedtuple

import gymnasium as gym
import numpy as np
import pytest
import torch

from torchrl_amago.envs import make_amago_env
from torchrl_amago.envs.checks import check_amago_env
from torchrl_amago.envs.libs.metaworld import KShotMetaworld, canonical_benchmark_name, make_metaworld_env, \
    metaworld_task_names
from tests.missing_package import assert_missing_package_named

Task = namedtuple("Task", ["env_name", "data"])


class _FakeArm(gym.Env):
    """Meta-World-like: 39-d float64 obs (hand xyz in [0:3], goal hidden = zeros), Box(-1, 1, (4,)) actions,
    hand moves 0.1 * action per step, reward = 1 - distance to the goal, success within 0.15, truncates at
    max_path_length and refuses to step after that (like Meta-World 3)."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (39,), dtype=np.float64)
    action_space = gym.spaces.Box(-1.0, 1.0, (4,), dtype=np.float32)
    max_path_length = 500
    offset = 0.0  # distinguishes task classes in the observation

    def __init__(self):
        self.goal = None
        self.hand = np.zeros(3)
        self.t = 0

    def set_task(self, task):
        assert task.env_name == self.name
        self.goal = np.asarray(task.data, dtype=np.float64)

    def _obs(self):
        o = np.zeros(39)
        o[:3] = self.hand
        o[3] = self.offset
        return o

    def reset(self, seed=None, options=None):
        assert self.goal is not None, "set_task before reset"
        self.hand = np.zeros(3)
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        if self.t >= self.max_path_length:
            raise ValueError("You must reset the env manually once truncate==True")
        self.t += 1
        self.hand = self.hand + 0.1 * np.asarray(action[:3], dtype=np.float64)
        d = float(np.linalg.norm(self.hand - self.goal))
        info = {"success": float(d < 0.15), "near_object": 0.0}
        return self._obs(), 1.0 - d, False, self.t >= self.max_path_length, info


class _FakeReach(_FakeArm):
    name = "reach-v3"


class _FakePush(_FakeArm):
    name, offset = "push-v3", 1.0


class _FakeDoor(_FakeArm):
    name, offset = "door-open-v3", 2.0


class FakeBenchmark:
    """Train: reach (2 goals) + push (1 goal); test: door (1 goal)."""

    def __init__(self):
        self.train_classes = {"reach-v3": _FakeReach, "push-v3": _FakePush}
        self.test_classes = {"door-open-v3": _FakeDoor}
        self.train_tasks = [Task("reach-v3", [0.3, 0.0, 0.0]), Task("reach-v3", [0.0, 0.3, 0.0]),
                            Task("push-v3", [0.0, 0.0, 0.3])]
        self.test_tasks = [Task("door-open-v3", [-0.3, 0.0, 0.0])]


def test_k_attempts_soft_reset_flag_returns_and_success():
    env = KShotMetaworld(FakeBenchmark(), "train", k_episodes=3, episode_length=4)
    assert env.observation_space.shape == (40,) and env.observation_space.dtype == np.float32
    assert env.action_space.shape == (4,) and env.task_names == ["reach-v3", "push-v3"]
    obs, info = env.reset(seed=0, options={"task": ("reach-v3", 0)})  # goal (0.3, 0, 0)
    assert obs[-1] == 1.0 and info["task_id"].tolist() == [0] and info["episode_count"].tolist() == [0]
    goal = env.env.goal.copy()
    # attempt 0: move +x twice (reaches 0.2, d = 0.1 -> success), then stay; attempt 1: wrong way; attempt 2: stay
    plan = [[1, 0, 0, 0]] * 2 + [[0, 0, 0, 0]] * 2 + [[-1, 0, 0, 0]] * 4 + [[0, 0, 0, 0]] * 4
    rewards, flags, ends, rets, succ, counts, terms = [], [], [], [], [], [], []
    for t, a in enumerate(plan):
        obs, r, term, trunc, info = env.step(np.array(a, dtype=np.float32))
        rewards.append(r)
        flags.append(obs[-1])
        ends.append(bool(info["episode_end"][0]))
        rets.append(float(info["episode_return"][0]))
        succ.append(bool(info["episode_success"][0]))
        counts.append(int(info["episode_count"][0]))
        terms.append(term)
        assert not trunc and info["task_id"].tolist() == [0]
        np.testing.assert_array_equal(env.env.goal, goal)  # same task across soft resets
        if t == 3:  # same-step soft reset: the returned obs is the new attempt's start (hand back at 0)
            np.testing.assert_array_equal(obs[:3], [0, 0, 0])
    np.testing.assert_allclose(rewards[:4], [1 - 0.2, 1 - 0.1, 1 - 0.1, 1 - 0.1], atol=1e-6)
    np.testing.assert_allclose(rewards[4:8], [1 - 0.4, 1 - 0.5, 1 - 0.6, 1 - 0.7], atol=1e-6)
    assert flags == [0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0]
    assert ends == [False, False, False, True] * 3
    assert counts == [0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3]
    assert [succ[3], succ[7], succ[11]] == [True, False, False]
    assert not any(succ[i] for i in range(12) if i not in (3, 7, 11))
    np.testing.assert_allclose([rets[3], rets[7], rets[11]],
                               [sum(rewards[0:4]), sum(rewards[4:8]), sum(rewards[8:12])], atol=1e-5)
    assert terms == [False] * 11 + [True]
    assert obs[-1] == 0.0  # the trial's last obs is the true last state, not a reset


def test_attempt_also_ends_at_inner_truncation_and_bad_lengths_rejected():
    class Short(_FakeReach):
        max_path_length = 3

    bench = FakeBenchmark()
    bench.train_classes = {"reach-v3": Short}
    bench.train_tasks = bench.train_tasks[:2]
    with pytest.raises(ValueError, match="exceeds the envs' max_path_length 3"):
        KShotMetaworld(bench, "train", 2, episode_length=5)
    env = KShotMetaworld(bench, "train", 2, episode_length=3)
    env.reset(seed=1)
    for t in range(6):  # never steps the inner env past its truncation (it would raise)
        obs, r, term, trunc, info = env.step(np.zeros(4, np.float32))
    assert term and info["episode_count"].tolist() == [2]
    with pytest.raises(ValueError, match="split must be 'train' or 'test'"):
        KShotMetaworld(bench, "val")
    with pytest.raises(ValueError, match="k_episodes"):
        KShotMetaworld(bench, "train", 0)


def test_task_sampling_covers_split_and_ids_match_names():
    bench = FakeBenchmark()
    env = KShotMetaworld(bench, "train", 1, 2)
    seen = set()
    env.reset(seed=3)
    for _ in range(40):
        obs, info = env.reset()
        name = env.task_names[int(info["task_id"][0])]
        assert name == env.task_name and obs[3] == {"reach-v3": 0.0, "push-v3": 1.0}[name]
        seen.add((name, tuple(env.env.goal)))
    assert seen == {(t.env_name, tuple(t.data)) for t in bench.train_tasks}
    test = KShotMetaworld(bench, "test", 1, 2)
    obs, info = test.reset(seed=0)
    assert test.task_names == ["door-open-v3"] and obs[3] == 2.0 and info["task_id"].tolist() == [0]
    assert metaworld_task_names(bench, "test") == ["door-open-v3"]
    # seeded: the same seed gives the same task sequence
    a, b = KShotMetaworld(bench, "train", 1, 2), KShotMetaworld(bench, "train", 1, 2)
    a.reset(seed=7)
    b.reset(seed=7)
    for _ in range(10):
        a.reset()
        b.reset()
        assert a.task_name == b.task_name and np.array_equal(a.env.goal, b.env.goal)


def test_torchrl_stack_over_stand_in():
    env = make_amago_env(make_metaworld_env(FakeBenchmark(), 2, k_episodes=2, episode_length=4))
    try:
        data = check_amago_env(env, steps_per_env=20)
        assert env.observation_spec["observation"].shape == (2, 40)
        assert env.observation_spec["observation"].dtype == torch.float32
        for k in ("episode_end", "episode_return", "episode_count", "episode_success", "task_id"):
            assert k in env.observation_spec.keys(), k
        env.set_seed(0)
        ro = env.rollout(9, break_when_any_done=False)
        n = ro["next"]
        done = n["done"][..., 0]
        assert done[:, 7].all() and not done[:, :7].any()  # 2 attempts x 4 steps = one trial
        assert n["terminated"][:, 7, 0].all()
        assert torch.equal(ro["time_idx"][0, :9, 0], torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 0]))
        assert torch.equal(n["observation"][0, :8, -1], torch.tensor([0, 0, 0, 1, 0, 0, 0, 0.]))
        assert ro["observation"][:, 0, -1].eq(1).all() and ro["observation"][:, 8, -1].eq(1).all()
        end = n["episode_end"][..., 0]
        assert end[:, [3, 7]].all() and end.sum() == 4
        assert torch.equal(n["episode_count"][0, [3, 7], 0], torch.tensor([1, 2]))
        rew = n["reward"][..., 0]
        torch.testing.assert_close(n["episode_return"][:, 3, 0], rew[:, :4].sum(1))
        torch.testing.assert_close(n["episode_return"][:, 7, 0], rew[:, 4:8].sum(1))
        assert n["task_id"].dtype == torch.int64 and ((n["task_id"] == 0) | (n["task_id"] == 1)).all()
        # the task id stays fixed within a trial
        assert (n["task_id"][:, :8] == n["task_id"][:, :1]).all()
        assert data.batch_size.numel() == 40
    finally:
        env.close()


def test_names_map_v2_to_v3():
    assert canonical_benchmark_name("reach-v2") == "reach-v3"
    assert canonical_benchmark_name("ML10") == "ml10" and canonical_benchmark_name("ml45") == "ml45"
    assert canonical_benchmark_name("pick-place-v3") == "pick-place-v3"


def test_missing_metaworld_names_the_pip_package(monkeypatch):
    assert_missing_package_named(monkeypatch, "metaworld", "pip install metaworld",
                                 lambda: make_metaworld_env("reach-v3", 2), lambda: metaworld_task_names("ml10"))


def test_real_metaworld_reach_trials():
    pytest.importorskip("metaworld")
    with pytest.raises(ValueError, match="unknown Meta-World benchmark 'no-such-task-v3'"):
        make_metaworld_env("no-such-task-v3", 1)
    env = make_amago_env(make_metaworld_env("reach-v2", 2, k_episodes=2, episode_length=10, seed=0))
    try:
        check_amago_env(env, steps_per_env=12)
        assert env.observation_spec["observation"].shape == (2, 40)
        assert env.action_spec.shape == (2, 4)
        env.set_seed(0)
        ro = env.rollout(21, break_when_any_done=False)
        n = ro["next"]
        assert n["done"][:, 19, 0].all() and not n["done"][:, :19].any()
        assert torch.equal(n["observation"][0, :20, -1], torch.tensor([0.] * 9 + [1.] + [0.] * 10))
        # Meta-World hides the goal (last 3 dims zero) and the soft reset puts the hand back at its start
        assert n["observation"][..., 36:39].abs().max() == 0
        torch.testing.assert_close(n["observation"][:, 9, :3], ro["observation"][:, 0, :3], atol=1e-3, rtol=0)
        torch.testing.assert_close(n["episode_return"][:, 9, 0], n["reward"][:, :10, 0].sum(1), rtol=1e-4, atol=1e-4)
        assert (n["task_id"] == 0).all()
    finally:
        env.close()


def test_real_metaworld_ml10_splits():
    pytest.importorskip("metaworld")
    train, test = metaworld_task_names("ml10", "train"), metaworld_task_names("ml10", "test")
    assert len(train) == 10 and len(test) == 5 and not set(train) & set(test)
    assert all(n.endswith("-v3") for n in train + test) and "reach-v3" in train
