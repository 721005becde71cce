"""Two-attempt multi-game Procgen adapter (``torchrl_amago.envs.libs.procgen``).

The adapter logic is tested on ``FakeLevel``, a stand-in with procgen's gym3 interface (``observe``/``act``/
``close``, auto-reset to the same level, 64x64x3 uint8 frames), so these tests need no procgen. The tests on the
real package skip when ``procgen`` (pip: ``procgen-mirror``) is missing.
"""

import numpy as np
import pytest
import torch

from torchrl_amago.envs import make_amago_env
from torchrl_amago.envs.checks import check_amago_env
from torchrl_amago.envs.libs.procgen import (PROCGEN_GAMES, TwoAttemptMTProcgen, make_procgen_env,
                                             paint_attempt_marker, procgen_distribution)
from tests.missing_package import assert_missing_package_named


class FakeLevel:
    """A deterministic procgen-like level: attempt length ``2 + level_seed % 3`` steps, reward = the action index,
    frame value ``50 + (7 * level_seed + 3 * t) % 200`` everywhere (never 0, so the black box is visible). Like
    procgen's gym3 env, the step that ends an attempt reports ``first=True`` with the auto-reset level's start frame.
    Every construction and every ``act`` is recorded in ``log``."""

    log: list = []

    def __init__(self, game, level_seed, distribution_mode, rand_seed):
        self.game, self.level_seed, self.mode, self.rand_seed = game, level_seed, distribution_mode, rand_seed
        self.length = 2 + level_seed % 3
        self.t, self.rew, self.first, self.closed = 0, 0.0, True, False
        FakeLevel.log.append(("make", game, level_seed, distribution_mode, rand_seed))

    def frame(self, t=None):
        v = 50 + (7 * self.level_seed + 3 * (self.t if t is None else t)) % 200
        return np.full((1, 64, 64, 3), v, dtype=np.uint8)

    def observe(self):
        return np.array([self.rew], dtype=np.float32), {"rgb": self.frame()}, np.array([self.first])

    def act(self, ac):
        assert not self.closed and ac.shape == (1,)
        FakeLevel.log.append(("act", self.game, self.level_seed, int(ac[0])))
        self.t += 1
        self.rew, self.first = float(ac[0]), False
        if self.t >= self.length:
            self.t, self.first = 0, True

    def close(self):
        self.closed = True


def fake_env(games=("coinrun",), n=1, **kw):
    kw.setdefault("seed", 0)
    return TwoAttemptMTProcgen(list(games), n, game_factory=FakeLevel, categorical_action_encoding=True, **kw)


def step(env, td, actions):
    td = td.clone()
    td["action"] = torch.as_tensor(actions, dtype=torch.int64).reshape(env.batch_size)
    out = env.step(td)
    return out["next"], out


@pytest.fixture(autouse=True)
def _clear_log():
    FakeLevel.log = []


def test_two_attempts_same_level_black_box_and_dummy_step():
    env = fake_env(seed_range=(4, 4))  # level seed 4 -> attempts of 2 + 4 % 3 = 3 steps
    td = env.reset()
    lvl = FakeLevel.log[0]
    assert lvl[:4] == ("make", "coinrun", 4, "easy")
    start = 50 + 7 * 4 % 200
    obs = td["observation"]
    assert obs.shape == (1, 64, 64, 3) and obs.dtype == torch.uint8 and (obs == start).all()
    assert td["task_id"].tolist() == [[0]] and td["episode_count"].tolist() == [[0]]
    rewards, ends, frames = [], [], []
    for a in [1, 2, 3, 9, 4, 5, 6]:  # 3 steps, the dummy step (action 9 ignored), 3 steps
        nxt, td = step(env, td, [a])
        rewards.append(nxt["reward"].item())
        ends.append((nxt["episode_end"].item(), nxt["episode_return"].item(), nxt["episode_count"].item()))
        frames.append(nxt["observation"][0])
        if nxt["done"].item():
            break
        td = nxt
    assert rewards == [1.0, 2.0, 3.0, 0.0, 4.0, 5.0, 6.0]
    assert ends == [(False, 0, 0), (False, 0, 0), (True, 6.0, 1), (False, 0, 1), (False, 0, 1), (False, 0, 1),
                    (True, 15.0, 2)]
    assert nxt["done"].item() and nxt["terminated"].item() and not nxt["truncated"].item()
    # the dummy step's action is never sent to procgen, and the level is rebuilt with the same game/seed/rand seed
    acts = [e[3] for e in FakeLevel.log if e[0] == "act"]
    assert acts == [1, 2, 3, 4, 5, 6]
    makes = [e for e in FakeLevel.log if e[0] == "make"]
    assert makes == [lvl, lvl]
    assert FakeLevel.log.index(makes[1], 1) == 4  # rebuilt right after the 3 actions of attempt 1 (the dummy step)
    # the box is black from the step that ends attempt 1 on; the rest of the frame is the level's frame
    box = np.zeros((64, 64), dtype=bool)
    box[1:5, 1:5] = True
    box = torch.from_numpy(box)
    for k, f in enumerate(frames):
        painted = (f[box] == 0).all().item()
        assert painted == (k >= 2), k
        assert (f[~box] != 0).all()
    assert (frames[3][~box] == start).all()  # the dummy step shows the level's start frame
    assert (frames[0][~box] == start + 3).all() and (frames[4][~box] == start + 3).all()  # same dynamics


def test_paint_attempt_marker_only_touches_the_box():
    f = np.full((2, 64, 64, 3), 200, dtype=np.uint8)
    paint_attempt_marker(f)
    assert (f[:, 1:5, 1:5] == 0).all() and f.sum() == 200 * (2 * 64 * 64 * 3 - 2 * 16 * 3)


def test_task_ids_match_games_levels_in_range_and_reward_scales():
    games = ["coinrun", "dodgeball", "maze"]
    env = fake_env(games, 64, seed_range=(10, 20), reward_scales={"dodgeball": 10.0},
                   distribution_mode="memory-hard")
    td = env.reset()
    makes = [e for e in FakeLevel.log if e[0] == "make"]
    ids = td["task_id"][:, 0].tolist()
    assert set(ids) == {0, 1, 2}
    assert [m[1] for m in makes] == [games[i] for i in ids] == env.current_games()
    assert all(10 <= m[2] <= 20 for m in makes) and len({m[2] for m in makes}) > 5
    # memory-hard: procgen's "memory" mode for the memory games, "hard" for the rest
    assert {(m[1], m[3]) for m in makes} == {("coinrun", "hard"), ("dodgeball", "memory"), ("maze", "memory")}
    nxt, _ = step(env, td, [3] * 64)
    scale = torch.tensor([10.0 if i == 1 else 1.0 for i in ids])
    assert torch.equal(nxt["reward"][:, 0], 3.0 * scale)
    assert torch.equal(nxt["task_id"], td["task_id"])  # the trial keeps its game


def test_seeded_trials_are_reproducible_and_reset_task_replays_a_level():
    def draws(seed):
        FakeLevel.log = []
        env = fake_env(["coinrun", "ninja"], 8, seed=seed, seed_range=(0, 10 ** 6))
        env.reset()
        return env.get_task()

    a, b, c = draws(1), draws(1), draws(2)
    assert (a == b).all() and not (a == c).all()
    env = fake_env(["coinrun", "ninja"], 2)
    td = env.reset(task={"task_id": torch.tensor([1, 0]), "level_seed": torch.tensor([5, 6]),
                         "rand_seed": torch.tensor([7, 8])})
    assert td["task_id"][:, 0].tolist() == [1, 0]
    assert FakeLevel.log[-2:] == [("make", "ninja", 5, "easy", 7), ("make", "coinrun", 6, "easy", 8)]


def test_partial_reset_only_restarts_masked_slots():
    env = fake_env(["coinrun"], 2, seed_range=(0, 10 ** 6))
    td = env.reset()
    before = env.get_task()
    nxt, _ = step(env, td, [1, 1])
    n_makes = sum(e[0] == "make" for e in FakeLevel.log)
    td2 = nxt.clone()
    td2["_reset"] = torch.tensor([[True], [False]])
    env.reset(td2)
    after = env.get_task()
    assert sum(e[0] == "make" for e in FakeLevel.log) == n_makes + 1
    assert (after["level_seed"][1] == before["level_seed"][1]).item()
    assert (after["level_seed"][0] != before["level_seed"][0]).item()


def test_full_stack_passes_check_amago_env_and_logs_per_attempt_returns():
    env = make_amago_env(make_procgen_env(["coinrun", "bigfish"], 3, seed_range=(0, 30), game_factory=FakeLevel,
                                          seed=0), max_steps=50)
    data = check_amago_env(env, steps_per_env=40)
    end = data["next", "episode_end"][..., 0]
    done = data["next", "done"][..., 0]
    assert done.any() and end.sum() >= 2 * done.sum()
    # every finished trial is exactly two attempts; the per-attempt returns add up to the trial return
    cnt = data["next", "episode_count"][..., 0]
    assert (cnt[done] == 2).all()
    ret = data["next", "episode_return"][..., 0]
    rew = data["next", "reward"][..., 0]
    for i in range(3):
        t_done = done[i].nonzero().squeeze(-1).tolist()
        starts = [0] + [t + 1 for t in t_done[:-1]]
        for s, e in zip(starts, t_done):
            if not data["is_init"][i, s, 0]:
                continue  # the batch starts with a partial trial only if not at a reset
            assert rew[i, s:e + 1].sum() == pytest.approx(ret[i, s:e + 1].sum().item())
    assert data["next", "task_id"].shape == (3, 40, 1)
    env.close()


def test_trial_time_limit_truncates():
    env = make_amago_env(fake_env(["coinrun"], 1, seed_range=(4, 4)), max_steps=5)
    ro = env.rollout(5, break_when_any_done=False)
    assert ro["next", "truncated"][:, -1].all() and not ro["next", "terminated"].any()


def test_bad_arguments_name_the_problem():
    with pytest.raises(ValueError, match="unknown procgen game"):
        fake_env(["pong"])
    with pytest.raises(ValueError, match="distribution_mode"):
        fake_env(distribution_mode="memory")
    with pytest.raises(ValueError, match="seed_range"):
        fake_env(seed_range=(5, 1))
    with pytest.raises(ValueError, match="reward_scales"):
        fake_env(reward_scales={"pong": 2.0})
    with pytest.raises(ValueError, match="num_envs"):
        make_procgen_env(["coinrun"], 0, game_factory=FakeLevel)
    assert procgen_distribution("heist", "memory-hard") == "memory"
    assert procgen_distribution("coinrun", "memory-hard") == "hard"
    assert procgen_distribution("heist", "easy") == "easy"
    assert len(PROCGEN_GAMES) == 16


def test_missing_procgen_names_the_pip_package(monkeypatch):
    assert_missing_package_named(monkeypatch, "procgen", "pip install procgen-mirror",
                                 lambda: make_procgen_env(["coinrun"], 2))


# ---------------------------------------------------------------- real procgen (pip install procgen-mirror)
def _real(games, n, **kw):
    pytest.importorskip("procgen")
    return make_procgen_env(games, n, categorical_action_encoding=True, **kw)


def test_real_procgen_specs_and_check_amago_env():
    env = make_amago_env(_real(["dodgeball", "starpilot"], 2, seed=0), max_steps=100)
    try:
        assert env.observation_spec["observation"].shape == (2, 64, 64, 3)
        assert env.observation_spec["observation"].dtype == torch.uint8
        assert env.action_spec.n == 15
        data = check_amago_env(env, steps_per_env=120)
        assert data["next", "done"].any()
        assert set(data["next", "task_id"].unique().tolist()) <= {0, 1}
    finally:
        env.close()


def test_real_procgen_second_attempt_replays_the_same_level_with_the_box():
    env = _real(["dodgeball"], 1, seed=3, seed_range=(100, 100))
    box = torch.zeros(64, 64, dtype=torch.bool)
    box[1:5, 1:5] = True
    acts = np.random.default_rng(0).integers(0, 15, 5000).tolist()
    try:
        td = env.reset()
        start = td["observation"][0].clone()
        assert not (start[box] == 0).all()
        attempts = []
        for k in range(2):
            frames, rewards = [], []
            for a in acts:
                nxt, _ = step(env, td, [a])
                rewards.append(nxt["reward"].item())
                frames.append(nxt["observation"][0])
                td = nxt
                if nxt["episode_end"].item():
                    assert nxt["episode_count"].item() == k + 1
                    assert nxt["episode_return"].item() == pytest.approx(sum(rewards))
                    break
            attempts.append((frames, rewards))
            if k == 0:
                assert not nxt["done"].item()
                td, _ = step(env, td, [9])  # the dummy step: action ignored, reward 0, the level's start frame
                assert td["reward"].item() == 0.0
                assert (td["observation"][0][box] == 0).all()
                assert torch.equal(td["observation"][0][~box], start[~box])
        assert nxt["done"].item() and nxt["terminated"].item()
        # same level, same actions -> the same attempt (procgen levels are deterministic given the level seed)
        (f0, r0), (f1, r1) = attempts
        assert r0 == r1 and len(f0) == len(f1) >= 3
        for k, (a, b) in enumerate(zip(f0, f1)):
            assert torch.equal(a[~box], b[~box])
            assert (b[box] == 0).all() and ((a[box] == 0).all().item() == (k == len(f0) - 1))
    finally:
        env.close()


def test_real_procgen_memory_hard_builds_both_kinds_of_games():
    env = _real(["heist", "coinrun"], 4, seed=0, distribution_mode="memory-hard")
    try:
        td = env.reset()
        assert td["observation"].shape == (4, 64, 64, 3)
        assert set(env.current_games()) <= {"heist", "coinrun"}
    finally:
        env.close()
