"""XLand-MiniGrid adapter: k episodes per ruleset form one trial (same-step soft resets, bookkeeping keys, termination
after the k-th episode, a new ruleset per trial). The trial logic runs on a numpy stand-in with xminigrid's
Environment API (no jax needed); the tests on the real package skip when xminigrid is missing."""
import math
from typing import NamedTuple

import numpy as np
import pytest
import torch

from torchrl_amago.envs import make_amago_env
from torchrl_amago.envs.checks import check_amago_env
from torchrl_amago.envs.libs.jax_bridge import JaxBatchedEnv
from torchrl_amago.envs.libs.xland import XLandTrialEnv, make_xland_env, xland_benchmark_names
from torchrl_amago.trainers.metrics import episode_metrics
from tests.missing_package import assert_missing_package_named


class Agent(NamedTuple):
    direction: np.ndarray
    pocket: np.ndarray  # (tile, color); (0, 0) is empty


class State(NamedTuple):
    agent: Agent
    goal_encoding: np.ndarray
    step_num: np.ndarray
    target: np.ndarray


class TimeStep(NamedTuple):
    state: State
    step_type: np.ndarray
    reward: np.ndarray
    observation: np.ndarray

    def last(self):
        return self.step_type == 2


class Params(NamedTuple):
    max_steps: int = 4
    view_size: int = 3
    ruleset: dict = None

    def replace(self, **kw):
        return self._replace(**kw)


class ToyXLand:
    """xminigrid-API stand-in: the ruleset hides a target action in 0..5; taking it succeeds (reward
    1 - 0.9 * t / max_steps); the action after it (mod 6) picks up a wrong object (the pocket fills, nothing ends);
    the goal encoding shows only the ruleset id; episodes are cut at max_steps."""

    def num_actions(self, params):
        return 6

    def reset(self, params, key):
        r = params.ruleset
        st = State(Agent(np.int64(np.random.default_rng(int(key)).integers(0, 4)), np.zeros(2, dtype=np.uint8)),
                   np.array([1, r["id"], 0, 0, 0], dtype=np.uint8), np.int64(0), np.int64(r["target"]))
        obs = np.zeros((params.view_size, params.view_size, 2), dtype=np.uint8)
        return TimeStep(st, np.uint8(0), np.float32(0.0), obs)

    def step(self, params, ts, action):
        t = ts.state.step_num + 1
        success = np.asarray(action) == ts.state.target
        trunc = t == params.max_steps
        obs = np.full((params.view_size, params.view_size, 2), min(int(t), 14), dtype=np.uint8)
        reward = np.float32(np.where(success, 1.0 - 0.9 * t / params.max_steps, 0.0))
        picked = success | (np.asarray(action) == (ts.state.target + 1) % 6)
        pocket = np.where(picked, np.array([3, 1], dtype=np.uint8), ts.state.agent.pocket)
        st = ts.state._replace(step_num=np.int64(t), agent=ts.state.agent._replace(pocket=pocket))
        return TimeStep(st, np.uint8(np.where(success | trunc, 2, 1)), reward, obs)


def sample_ruleset(key):
    rid = np.random.default_rng(int(key)).integers(1, 15)  # goal encodings stay within XLand's 0..14
    return {"id": np.int64(rid), "target": np.int64(rid % 6)}


def _env(n=2, k=3, max_steps=4, end_on_pick=False, **kw):
    fenv = XLandTrialEnv(ToyXLand(), Params(max_steps=max_steps), sample_ruleset, k, backend="numpy",
                         end_on_pick=end_on_pick)
    return JaxBatchedEnv(fenv, n, backend="numpy", categorical_action_encoding=True, **kw)


def _rollout(env, steps, policy):
    return env.rollout(steps, lambda td: td.set("action", policy(td)), break_when_any_done=False)


def test_specs_and_suggested_context():
    env = _env()
    fenv = env.fenv
    spec = env.observation_spec
    assert spec["grid"].shape == (2, 3, 3, 2) and spec["grid"].dtype == torch.uint8
    assert spec["direction"].shape == (2, 4) and spec["goal"].shape == (2, 5)
    assert spec["episode_end"].dtype == torch.bool and spec["episode_count"].dtype == torch.int64
    assert spec["episode_return"].dtype == torch.float32 and spec["soft_reset"].dtype == torch.float32
    assert spec["episode_success"].dtype == torch.bool
    assert fenv.suggested_max_seq_len == (4 + 1) * 3
    assert env.action_spec.n == 6


def test_k_failed_episodes_make_one_trial():
    env = _env(n=2, k=3, max_steps=4, seed=0)
    ro = _rollout(env, 14, lambda td: (td["goal"][:, 1].long() % 6 + 1) % 6)  # never the target action
    nxt = ro["next"]
    end = nxt["episode_end"].squeeze(-1)
    assert torch.equal(end[0], torch.tensor([(t + 1) % 4 == 0 for t in range(14)]))
    assert torch.equal(nxt["episode_count"][0, :, 0], torch.tensor([(t + 1) // 4 for t in range(12)] + [0, 0]))
    # soft resets inside the trial show the next attempt's first frame; the 3rd episode end is the trial end
    assert torch.equal(nxt["soft_reset"][0, :, 0], torch.tensor([1.0 if t in (3, 7) else 0.0 for t in range(14)]))
    done, term = nxt["done"][0, :, 0], nxt["terminated"][0, :, 0]
    assert done.nonzero().flatten().tolist() == [11] and torch.equal(done, term)
    assert not nxt["truncated"].any()
    assert torch.equal(nxt["episode_return"], torch.zeros_like(nxt["episode_return"]))
    assert not nxt["episode_success"].any()  # every attempt ran out of time
    # the ruleset (goal) is kept for the whole trial and redrawn at the next one
    goal = ro["goal"][0, :, 1]
    assert (goal[:12] == goal[0]).all()
    assert ro["soft_reset"][0, 12, 0] == 1.0  # the new trial's first observation


def test_successes_give_episode_returns_and_trainer_metrics():
    env = _env(n=3, k=2, max_steps=4, seed=1)
    steps = {"n": 0}

    def policy(td):  # fail at the first step of every attempt, then take the target action
        steps["n"] += 1
        tgt = td["goal"][:, 1].long() % 6
        first = td["soft_reset"].squeeze(-1) > 0
        return torch.where(first, (tgt + 1) % 6, tgt)

    ro = _rollout(env, 8, policy)
    nxt = ro["next"]
    end = nxt["episode_end"].squeeze(-1)
    assert torch.equal(end[:, :4], torch.tensor([[False, True, False, True]] * 3))
    r = 1.0 - 0.9 * 2 / 4  # success at the 2nd step of each attempt
    assert torch.allclose(nxt["episode_return"][end].squeeze(-1), torch.full((int(end.sum()),), r))
    assert torch.allclose(nxt["reward"][:, 1, 0], torch.full((3,), r))
    assert torch.equal(nxt["episode_success"].squeeze(-1), end)  # success exactly where a rewarded attempt ends
    assert nxt["done"][:, 3].all() and not nxt["done"][:, :3].any()
    m = episode_metrics(ro, "eval")
    assert math.isclose(m["eval/episode_0_return"], r, rel_tol=1e-6)
    assert math.isclose(m["eval/episode_1_return"], r, rel_tol=1e-6)
    assert m["eval/episode_0_success"] == m["eval/episode_1_success"] == 1.0


@pytest.mark.parametrize("end_on_pick", [False, True])
def test_one_pick_rulesets_end_an_attempt_at_a_wrong_pick(end_on_pick):
    env = _env(n=2, k=2, max_steps=4, end_on_pick=end_on_pick, seed=3)

    def policy(td):  # pick the wrong object at the first step of every attempt, then take the target action
        tgt = td["goal"][:, 1].long() % 6
        return torch.where(td["soft_reset"].squeeze(-1) > 0, (tgt + 1) % 6, tgt)

    nxt = _rollout(env, 4, policy)["next"]
    end, success = nxt["episode_end"][0, :, 0], nxt["episode_success"][0, :, 0]
    if end_on_pick:  # each attempt: the wrong pick ends it unrewarded; the trial (2 attempts) ends at step 2
        assert end.tolist() == [True, True, True, True] and not success.any()
        assert nxt["done"][0, :, 0].tolist() == [False, True, False, True]
        assert torch.equal(nxt["reward"], torch.zeros_like(nxt["reward"]))
    else:  # the wrong pick changes nothing; the target action at step 2 succeeds
        assert end.tolist() == [False, True, False, True] and success.tolist() == [False, True, False, True]


def test_full_amago_stack_on_the_stand_in():
    data = check_amago_env(make_amago_env(_env(n=3, k=2, max_steps=3, seed=2)), steps_per_env=14)
    assert data["next", "done"].any() and data["next", "episode_end"].sum() > data["next", "done"].sum()
    # time_idx counts through soft resets; it only restarts at the trial's hard reset
    soft = (data["next", "soft_reset"].squeeze(-1) > 0) & ~data["next", "done"].squeeze(-1)
    assert soft.any() and (data["time_idx"].squeeze(-1)[:, 1:][soft[:, :-1]] > 0).all()


def test_missing_xminigrid_names_the_pip_package(monkeypatch):
    assert_missing_package_named(monkeypatch, "xminigrid", "pip install (xminigrid|jax)", xland_benchmark_names,
                                 lambda: make_xland_env(2, ruleset_benchmark="local-trivial"))


@pytest.mark.slow  # compiling XLand's step takes ~1 min on CPU
def test_real_xland_local_rulesets():
    pytest.importorskip("jax")
    pytest.importorskip("xminigrid")
    assert {"small-1m", "local-trivial", "local-hidden-rule", "local-one-pick"} <= set(xland_benchmark_names())
    with pytest.raises(ValueError, match="unknown ruleset_benchmark"):
        make_xland_env(2, ruleset_benchmark="nope", rooms=1, grid_size=7)
    env = make_xland_env(4, k_episodes=2, rooms=1, grid_size=7, ruleset_benchmark="local-hidden-rule", max_steps=5,
                         num_distractors=1, seed=0)
    assert env.fenv.suggested_max_seq_len == 12
    data = check_amago_env(make_amago_env(env), steps_per_env=25)
    nxt = data["next"]
    done = nxt["done"].squeeze(-1)
    count = nxt["episode_count"].squeeze(-1)
    assert torch.equal(done, nxt["episode_end"].squeeze(-1) & (count == 2))  # a trial ends with its 2nd episode
    assert done.any()
    # the goal (ruleset) is constant inside a trial: compare each step's goal with the trial's first one
    goal, init = data["goal"], data["is_init"].squeeze(-1)
    for i in range(4):
        starts = init[i].nonzero().flatten().tolist() + [25]
        for a, b in zip(starts[:-1], starts[1:]):
            assert (goal[i, a:b] == goal[i, a]).all()
    # hidden-rule goal: hold an object that is not on the floor (goal id 1 = AgentHoldGoal)
    assert (goal[..., 0] == 1).all()


@pytest.mark.slow  # compiles XLand's step
def test_real_xland_one_pick_ends_unrewarded_attempts_early():
    pytest.importorskip("jax")
    pytest.importorskip("xminigrid")

    def early_failures(benchmark):  # unrewarded attempts that ended before the step limit, under random actions
        env = make_xland_env(16, k_episodes=3, rooms=1, grid_size=5, ruleset_benchmark=benchmark, max_steps=12,
                             num_distractors=1, seed=0)
        ro = env.rollout(120, break_when_any_done=False)  # random actions
        nxt, n = ro["next"], 0
        for i in range(16):
            ends = nxt["episode_end"][i, :, 0].nonzero().flatten().tolist()
            for a, b in zip([-1] + ends[:-1], ends):
                n += int(b - a < 12 and not nxt["episode_success"][i, b, 0])
        return n, int(nxt["episode_success"].sum())

    assert early_failures("local-hidden-rule")[0] == 0  # a wrong pick can be put back: attempts end by success or time
    fails, wins = early_failures("local-one-pick")
    assert fails >= 8 and wins >= 2, (fails, wins)  # both objects get picked; only the right one is rewarded
