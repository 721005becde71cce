"""Multi-task meta BabyAI adapter: k attempts on one (task, layout seed), dummy-step resets, mission tokens, extra
features, per-attempt bookkeeping and task ids.

The adapter logic is tested on a stand-in gymnasium env with minigrid's observation dict (no minigrid needed);
the tests on real BabyAI levels skip when `minigrid` is missing.
"""

import gymnasium as gym
import numpy as np
import pytest
import torch

from torchrl_amago.envs import make_amago_env
from torchrl_amago.envs.checks import check_amago_env
from torchrl_amago.envs.libs.babyai import (BABYAI_VOCAB_SIZE, BABYAI_WORDS, MultitaskMetaBabyAI, babyai_task_names,
                                            make_babyai_env, max_trial_length, tokenize_mission)
from tests.missing_package import assert_missing_package_named

MISSIONS = {"FakeGoTo-v0": "go to the red ball", "FakePick-v0": "pick up the zorblax key"}  # 'zorblax' is unknown


class FakeMiniGrid(gym.Env):
    """Minigrid-like env: the layout (image pattern, start direction, secret action) depends only on the reset seed.

    Taking the secret action ends the attempt with reward 1 - 0.9 * t / max_steps (terminated); the attempt is
    truncated after `max_steps` steps. The image's [0, 0, 0] cell counts the steps taken in this attempt."""

    observation_space = gym.spaces.Dict({"image": gym.spaces.Box(0, 255, (7, 7, 3), np.uint8),
                                         "direction": gym.spaces.Discrete(4),
                                         "mission": gym.spaces.Text(200)})
    action_space = gym.spaces.Discrete(7)
    resets: list = []  # (task, seed) of every reset, shared by all instances (cleared by the tests)

    def __init__(self, task: str, max_steps: int = 5):
        self.task, self.max_steps = task, max_steps

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        FakeMiniGrid.resets.append((self.task, seed))
        rng = np.random.default_rng(seed)
        self.pattern = rng.integers(0, 11, (7, 7, 3)).astype(np.uint8)
        self.direction = int(rng.integers(4))
        self.secret = int(seed) % 7
        self.t = 0
        return self._obs(), {}

    def _obs(self):
        img = self.pattern.copy()
        img[0, 0, 0] = self.t
        return {"image": img, "direction": self.direction, "mission": MISSIONS.get(self.task, "go to the red ball")}

    def step(self, action):
        self.t += 1
        self.direction = (self.direction + 1) % 4 if action == 1 else self.direction
        if int(action) == self.secret:
            return self._obs(), 1.0 - 0.9 * self.t / self.max_steps, True, False, {}
        return self._obs(), 0.0, False, self.t >= self.max_steps, {}


@pytest.fixture(autouse=True)
def _clear_resets():
    FakeMiniGrid.resets.clear()
    yield


def fake_env(num_envs=2, k=2, tasks=("FakeGoTo-v0", "FakePick-v0"), seed_range=(0, 1000), **kw):
    return MultitaskMetaBabyAI(list(tasks), num_envs, k_episodes=k, seed_range=seed_range,
                               env_factory=FakeMiniGrid, categorical_action_encoding=True, seed=0, **kw)


def run(env, actions, td):
    """Step from the reset tensordict `td` with the given [T, N] action indices; returns the "next" tensordicts."""
    out = []
    for a in actions:
        td.set("action", torch.as_tensor(a, dtype=torch.int64))
        td = env.step(td)
        out.append(td["next"].clone())
        td = td["next"].clone()
    return out


def test_tokenize_mission_blank_unknown_and_words():
    toks = tokenize_mission("go to the zorblax ball")
    assert toks.dtype == np.int32 and toks.shape == (9,)
    w = {x: i + 2 for i, x in enumerate(BABYAI_WORDS)}
    assert toks.tolist() == [w["go"], w["to"], w["the"], 1, w["ball"], 0, 0, 0, 0]
    assert tokenize_mission("").tolist() == [0] * 9
    assert tokenize_mission("a " * 12).tolist() == [w["a"]] * 9  # longer missions are cut at 9 words
    assert BABYAI_VOCAB_SIZE == 31 and max(w.values()) == BABYAI_VOCAB_SIZE - 1


def test_reset_values_specs_and_task_ids():
    env = fake_env(num_envs=3)
    td = env.reset()
    assert td["image"].shape == (3, 7, 7, 3) and td["image"].dtype == torch.uint8
    assert td["mission"].shape == (3, 9) and td["mission"].dtype == torch.int32
    assert td["extra"].shape == (3, 5) and td["extra"].dtype == torch.float32
    assert td["task_id"].shape == (3, 1) and td["task_id"].dtype == torch.int64
    for i in range(3):
        t = int(td["task_id"][i, 0])
        task, seed = env.task_names[t], int(env.layout_seed[i])
        assert (task, seed) in FakeMiniGrid.resets
        assert td["mission"][i].tolist() == tokenize_mission(MISSIONS[task]).tolist()
        ref = FakeMiniGrid(task)
        obs, _ = ref.reset(seed=seed)
        assert np.array_equal(td["image"][i].numpy(), obs["image"])
        direction = torch.zeros(4)
        direction[obs["direction"]] = 1
        assert torch.equal(td["extra"][i], torch.cat([direction, torch.tensor([0.5])]))  # attempt 1 of k=2
        assert 0 <= seed <= 1000
    assert env.current_tasks() == [env.task_names[int(i)] for i in td["task_id"][:, 0]]
    assert not td["episode_end"].any() and (td["episode_count"] == 0).all()
    # the unknown word 'zorblax' of FakePick's mission is token 1 in the observation
    pick = (td["task_id"][:, 0] == env.task_names.index("FakePick-v0")).nonzero().squeeze(-1)
    if len(pick):
        assert td["mission"][pick[0], 3] == 1


def test_hide_mission_blanks_every_token_and_keeps_the_rest():
    """With hide_mission the mission is blank at every step of every attempt; image and extra are as without it."""
    shown, hidden = fake_env(num_envs=3), fake_env(num_envs=3, hide_mission=True)
    td_s, td_h = shown.reset(), hidden.reset()
    assert (td_s["mission"] != 0).any(dim=-1).all()
    for _ in range(8):  # through attempt ends and new attempts
        assert (td_h["mission"] == 0).all()
        assert torch.equal(td_h["image"], td_s["image"]) and torch.equal(td_h["extra"], td_s["extra"])
        action = torch.full((3,), 2, dtype=torch.int64)
        td_s = shown.step(td_s.set("action", action))["next"].clone()
        td_h = hidden.step(td_h.set("action", action))["next"].clone()
    assert (td_h["episode_count"] > 0).any()


def test_k_attempts_same_layout_dummy_step_and_bookkeeping():
    env = fake_env(num_envs=1, k=3)
    td = env.reset()
    seed = int(env.layout_seed[0])
    secret = seed % 7
    wrong = (secret + 3) % 7
    # attempt 1: solve at step 2; dummy step; attempt 2: time out (5 steps); dummy; attempt 3: solve at step 1
    steps = run(env, [[wrong], [secret], [wrong], [wrong] * 1, [wrong], [wrong], [wrong], [wrong], [wrong],
                      [secret]], td)
    end = [bool(s["episode_end"]) for s in steps]
    assert end == [False, True, False, False, False, False, False, True, False, True]
    rew = [float(s["reward"]) for s in steps]
    assert rew[1] == pytest.approx(1 - 0.9 * 2 / 5) and rew[2] == 0.0 and rew[9] == pytest.approx(1 - 0.9 / 5)
    assert sum(rew) == pytest.approx(rew[1] + rew[9])
    # the dummy step ignores its action (even the secret one would not end anything) and shows the start obs
    assert steps[2]["image"][0, 0, 0, 0] == 0 and steps[1]["image"][0, 0, 0, 0] == 2
    assert [float(s["episode_return"]) for s in steps if bool(s["episode_end"])] == \
        pytest.approx([rew[1], 0.0, rew[9]])
    assert [bool(s["episode_success"]) for s in steps if bool(s["episode_end"])] == [True, False, True]
    assert [int(s["episode_count"]) for s in steps] == [0, 1, 1, 1, 1, 1, 1, 2, 2, 3]
    assert [float(s["extra"][0, 4]) for s in steps] == pytest.approx(
        [1 / 3, 2 / 3, 2 / 3, 2 / 3, 2 / 3, 2 / 3, 2 / 3, 1.0, 1.0, 4 / 3])
    done = [bool(s["done"]) for s in steps]
    assert done == [False] * 9 + [True] and bool(steps[-1]["terminated"]) and not bool(steps[-1]["truncated"])
    # every attempt of the trial used the same seed: 1 hard reset + 2 attempt resets
    assert FakeMiniGrid.resets[-3:] == [(env.task_names[int(env.task_index[0])], seed)] * 3
    assert all(int(s["task_id"]) == int(env.task_index[0]) for s in steps)


def test_timeout_of_last_attempt_terminates_unless_asked():
    for flag, term in ((True, True), (False, False)):
        env = fake_env(num_envs=1, k=1, timeout_terminates=flag)
        td = env.reset()
        wrong = (int(env.layout_seed[0]) + 1) % 7
        steps = run(env, [[wrong]] * 5, td)
        assert bool(steps[-1]["done"]) and bool(steps[-1]["terminated"]) == term
        assert bool(steps[-1]["truncated"]) == (not term) and not any(bool(s["done"]) for s in steps[:-1])


def test_max_steps_caps_every_attempt_and_sets_the_step_penalty():
    env = fake_env(num_envs=1, k=2, max_steps=3)  # the stand-in's own limit is 5
    td = env.reset()
    secret = int(env.layout_seed[0]) % 7
    wrong = (secret + 1) % 7
    steps = run(env, [[wrong]] * 3 + [[wrong]] + [[wrong], [secret]], td)  # attempt 1 times out; dummy; solve at 2
    assert [bool(s["episode_end"]) for s in steps] == [False, False, True, False, False, True]
    assert float(steps[-1]["reward"]) == pytest.approx(1 - 0.9 * 2 / 3)


def test_new_trial_draws_new_task_and_seed_and_set_seed_repeats():
    env = fake_env(num_envs=4, seed_range=(10, 20))
    seen = set()
    for _ in range(10):
        env.reset()
        seen |= {(int(t), int(s)) for t, s in zip(env.task_index, env.layout_seed)}
    assert {t for t, _ in seen} == {0, 1} and all(10 <= s <= 20 for _, s in seen) and len(seen) > 4
    a, b = fake_env(num_envs=4), fake_env(num_envs=4)
    a.set_seed(3)
    b.set_seed(3)
    a.reset()
    b.reset()
    assert torch.equal(a.layout_seed, b.layout_seed) and torch.equal(a.task_index, b.task_index)
    # task protocol: replay a chosen (task, seed)
    task = a.get_task()
    c = fake_env(num_envs=4)
    td = c.reset(task=task)
    assert torch.equal(c.layout_seed, a.layout_seed) and torch.equal(td["task_id"][:, 0], a.task_index)


def test_full_stack_passes_check_amago_env_and_trial_lengths():
    env = make_amago_env(fake_env(num_envs=3, k=2))
    data = check_amago_env(env, steps_per_env=40)
    done = data["next", "done"][..., 0]
    assert done.any()
    # every trial: 2 attempts of <= 5 steps + 1 dummy step
    assert max_trial_length(5, 2) == 11
    for i in range(3):
        ends = done[i].nonzero().squeeze(-1).tolist()
        starts = [0] + [e + 1 for e in ends[:-1]]
        for s, e in zip(starts, ends):
            assert 3 <= e - s + 1 <= 11
            ep_end = data["next", "episode_end"][i, s:e + 1, 0]
            assert int(ep_end.sum()) == 2 and bool(ep_end[-1])
            # task id constant within a trial
            assert data["next", "task_id"][i, s:e + 1].unique().numel() == 1
    # the policy-facing keys are in the spec; the bookkeeping keys too
    for k in ("image", "mission", "extra", "task_id", "episode_end", "episode_success", "prev_action", "time_idx"):
        assert k in env.observation_spec.keys()


def test_bad_arguments():
    with pytest.raises(ValueError, match="task_names"):
        MultitaskMetaBabyAI([], 1, env_factory=FakeMiniGrid)
    with pytest.raises(ValueError, match="k_episodes"):
        MultitaskMetaBabyAI(["FakeGoTo-v0"], 1, k_episodes=0, env_factory=FakeMiniGrid)
    with pytest.raises(ValueError, match="obs_kind"):
        MultitaskMetaBabyAI(["FakeGoTo-v0"], 1, obs_kind="rgb", env_factory=FakeMiniGrid)
    with pytest.raises(ValueError, match="seed_range"):
        MultitaskMetaBabyAI(["FakeGoTo-v0"], 1, seed_range=(5, 1), env_factory=FakeMiniGrid)
    with pytest.raises(ValueError, match="num_envs"):
        make_babyai_env(["FakeGoTo-v0"], 0, env_factory=FakeMiniGrid)
    with pytest.raises(ValueError, match="max_steps"):
        MultitaskMetaBabyAI(["FakeGoTo-v0"], 1, max_steps=0, env_factory=FakeMiniGrid)


def test_full_grid_is_zero_padded_to_22():
    class Small(FakeMiniGrid):
        def _obs(self):
            o = super()._obs()
            o["image"] = np.full((9, 9, 3), 7, np.uint8)
            return o

    env = MultitaskMetaBabyAI(["FakeGoTo-v0"], 1, obs_kind="full-grid", env_factory=Small, seed=0)
    img = env.reset()["image"][0]
    assert img.shape == (22, 22, 3) and (img[:9, :9] == 7).all() and img[9:].eq(0).all() and img[:, 9:].eq(0).all()


def test_missing_minigrid_names_the_pip_package(monkeypatch):
    assert_missing_package_named(monkeypatch, "minigrid", "pip install minigrid",
                                 lambda: make_babyai_env(["BabyAI-GoToObj-v0"], 2), babyai_task_names)


# ---------------------------------------------------------------------------------------------- real minigrid
def test_real_babyai_same_layout_across_attempts_and_specs():
    pytest.importorskip("minigrid")
    names = babyai_task_names()
    assert "BabyAI-GoToObj-v0" in names and not any("BossLevel" in n for n in names)
    with pytest.raises(ValueError, match="unknown BabyAI task"):
        make_babyai_env(["BabyAI-NoSuchLevel-v0"], 1)
    tasks = ["BabyAI-GoToRedBallNoDists-v0", "GoToObj-v0"]  # the prefix may be left out
    base = make_babyai_env(tasks, 2, k_episodes=2, seed_range=(0, 50), seed=0)
    assert base.task_names == ["BabyAI-GoToRedBallNoDists-v0", "BabyAI-GoToObj-v0"]
    env = make_amago_env(base)
    try:
        data = check_amago_env(env, steps_per_env=140)
        nxt = data["next"]
        assert nxt["image"].dtype == torch.uint8 and int(nxt["image"][..., 0].max()) <= 10
        assert (nxt["mission"] >= 2).any() and not (nxt["mission"] == 1).any()  # every word is in the vocabulary
        for i in range(2):
            init = data["is_init"][i, :, 0]
            assert data["time_idx"][i, init].eq(0).all()
            # attempt starts: the hard reset and the steps after each dummy step show the same first image
            end, done = nxt["episode_end"][i, :, 0], nxt["done"][i, :, 0]
            checked = 0
            for e in end.nonzero().squeeze(-1).tolist():
                if bool(done[e]) or e + 1 >= end.numel():
                    continue
                t0 = int(init[: e + 1].nonzero().max())  # this trial's first step
                # the step after an attempt's end is the dummy step: reward 0, the attempt's first observation
                assert torch.equal(nxt["image"][i, e + 1], data["image"][i, t0])
                assert torch.equal(nxt["mission"][i, e + 1], data["mission"][i, t0])
                assert float(nxt["reward"][i, e + 1]) == 0.0
                checked += 1
            assert checked >= 1
        # success is "the attempt's last reward > 0" (BabyAI rewards only success)
        succ = nxt["episode_success"][nxt["episode_end"]]
        rets = nxt["episode_return"][nxt["episode_end"]]
        assert torch.equal(succ, rets > 0)
    finally:
        env.close()


def test_real_babyai_obs_kinds_shapes():
    pytest.importorskip("minigrid")
    for kind, shape in (("full-grid", (22, 22, 3)), ("partial-image", (63, 63, 3)), ("full-image", (63, 63, 3))):
        env = make_babyai_env(["BabyAI-GoToObj-v0"], 1, obs_kind=kind, seed=0)
        try:
            td = env.reset()
            assert td["image"].shape == (1, *shape) and td["image"].dtype == torch.uint8
            assert td["image"].float().std() > 0
        finally:
            env.close()


def test_real_babyai_max_steps_is_the_attempt_limit():
    pytest.importorskip("minigrid")
    env = make_babyai_env(["BabyAI-OneRoomS12-v0"], 1, k_episodes=1, max_steps=7, seed=0,
                          categorical_action_encoding=True)  # its own limit: 144
    try:
        td = env.reset()
        assert env._env(0).unwrapped.max_steps == 7
        steps = run(env, [[6]] * 7, td)  # "done" does nothing in this level: the attempt runs out of time
        assert [bool(s["done"]) for s in steps] == [False] * 6 + [True] and float(steps[-1]["episode_return"]) == 0.0
    finally:
        env.close()
