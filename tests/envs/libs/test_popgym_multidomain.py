"""Multi-domain POPGym (AMAGO-2 ``MultiDomainPOPGym``): padded obs layout, invalid-action replacement, zero shown
reward during warm-up, dummy-step episode resets, trial length, a game per trial with ``task_id``, TorchRL specs.

The adapter tests use hand-made gymnasium games (no popgym needed); the tests on real popgym games skip when the
package is missing.
"""

import gymnasium as gym
import numpy as np
import pytest
import torch

from torchrl_amago.envs import make_amago_env
from torchrl_amago.envs.checks import check_amago_env
from torchrl_amago.envs.libs.popgym_multidomain import MULTIDOMAIN_POPGYM_GAMES, MultiDomainPOPGym, \
    make_multidomain_popgym_env
from tests.missing_package import assert_missing_package_named


class _Guess(gym.Env):
    """Obs Discrete(3) (shown one-hot); 2 actions; reward +1 for action 1, -0.5 for action 0; ends after 3 steps."""

    observation_space = gym.spaces.Discrete(3)
    action_space = gym.spaces.Discrete(2)
    LENGTH = 3

    def __init__(self):
        self.actions, self.resets = [], 0

    def reset(self, seed=None, options=None):
        self.t = 0
        self.resets += 1
        return 0, {}

    def step(self, action):
        self.actions.append(int(action))
        self.t += 1
        r = 1.0 if int(action) == 1 else -0.5
        return self.t % 3, r, self.t >= self.LENGTH, False, {}


class _Grid(gym.Env):
    """Obs Box(2,) = [seeded draw, t]; MultiDiscrete([2, 2]) actions (4 flat); reward 0.25; truncates after 2."""

    observation_space = gym.spaces.Box(-10.0, 10.0, (2,), dtype=np.float32)
    action_space = gym.spaces.MultiDiscrete([2, 2])

    def reset(self, seed=None, options=None):
        self.rng = np.random.default_rng(seed)
        self.t = 0
        self.v = float(self.rng.uniform())
        return np.array([self.v, 0.0], np.float32), {}

    def step(self, action):
        assert len(action) == 2
        self.t += 1
        return np.array([self.v, self.t], np.float32), 0.25, False, self.t >= 2, {}


GAMES = {"guess": _Guess, "grid": _Grid}


def _step(env, td, a):
    td = td.clone()
    td["action"] = torch.nn.functional.one_hot(torch.as_tensor(a).reshape(env.batch_size), env.n_actions)
    out = env.step(td)
    return out["next"], out


def _slot_game(env, i=0):
    return env._envs[i][int(env.game[i])]


def test_padding_layout_and_spaces():
    env = MultiDomainPOPGym(2, games=GAMES, seed=0)
    assert env.games == ["guess", "grid"] and env.game_num_actions == [2, 4] and env.game_obs_dims == [3, 2]
    assert env.observation_spec["observation"].shape == (2, 30) and env.action_spec.shape == (2, 26)
    td = env.reset(task={"game": torch.tensor([0, 1])})
    obs = td["observation"]
    # [raw | 0-pad | timer/1000, episode/warmup, valid_action, last_reward]
    torch.testing.assert_close(obs[0], torch.tensor([1.0, 0, 0] + [0.0] * 23 + [0.0, 0.0, 1.0, 0.0]))
    v = _slot_game(env, 1).env.v
    torch.testing.assert_close(obs[1], torch.tensor([v, 0.0] + [0.0] * 24 + [0.0, 0.0, 1.0, 0.0]))
    assert td["task_id"].tolist() == [[0], [1]] and td["task_id"].dtype == torch.int64
    nxt, _ = _step(env, td, [1, 3])
    torch.testing.assert_close(nxt["observation"][0], torch.tensor([0.0, 1, 0] + [0.0] * 23 + [0.001, 0.0, 1.0, 1.0]))
    torch.testing.assert_close(nxt["observation"][1], torch.tensor([v, 1.0] + [0.0] * 24 + [0.001, 0.0, 1.0, 0.25]))


def test_invalid_action_is_replaced_by_a_random_valid_one_and_flagged():
    env = MultiDomainPOPGym(1, games={"guess": _Guess}, seed=0)
    td = env.reset()
    flags = []
    for a in (1, 7, 2, 25, 0, 9, 9, 9, 9, 9, 9):
        td, out = _step(env, td, [a])
        flags.append(td["observation"][0, -2].item())
        if out["next", "done"].any():
            td = env.reset()
    # valid_action is shown on every step, dummy steps included (the ignored action is still checked)
    assert flags == [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    # what reached the game: steps 4 and 8 were dummy steps (8 ended the trial; the same game instance goes on)
    acts = _slot_game(env).env.actions
    assert len(acts) == 9 and acts[0] == 1 and acts[3] == 0
    assert set(acts[1:3] + acts[4:]) == {0, 1}  # random valid replacements (both drawn)


@pytest.mark.parametrize("warmup", [1, 2])
def test_warmup_reward_hidden_dummy_steps_and_trial_end(warmup):
    env = MultiDomainPOPGym(1, games={"guess": _Guess}, warmup_episodes=warmup, seed=0)
    td = env.reset()
    game = _slot_game(env).env
    rewards, obs, flags, ends, rets, counts = [], [], [], [], [], []
    steps = 0
    while True:
        nxt, out = _step(env, td, [1])
        steps += 1
        rewards.append(out["next", "reward"].item())
        obs.append(nxt["observation"][0])
        flags.append((out["next", "terminated"].item(), out["next", "truncated"].item(), out["next", "done"].item()))
        ends.append(nxt["episode_end"].item())
        rets.append(nxt["episode_return"].item())
        counts.append(nxt["episode_count"].item())
        td = nxt
        if flags[-1][2]:
            break
        assert steps < 50
    L = _Guess.LENGTH
    # warmup + 1 episodes of L steps, each followed by one dummy step; the trial ends on the last dummy step
    assert steps == (warmup + 1) * (L + 1)
    assert flags[-1] == (True, False, True) and not any(f[2] for f in flags[:-1])
    dummy = [k * (L + 1) + L for k in range(warmup + 1)]  # 0-based step indices of the dummy steps
    for k in range(warmup + 1):
        ep = range(k * (L + 1), k * (L + 1) + L)
        shown = [rewards[t] for t in ep]
        assert shown == ([0.0] * L if k < warmup else [1.0] * L)  # shown reward 0 in warm-up
        assert [obs[t][-1].item() for t in ep] == [1.0] * L  # the true reward is in the observation
        assert [obs[t][-3].item() for t in ep] == pytest.approx([k / warmup] * L)
        assert ends[ep[-1]] and rets[ep[-1]] == pytest.approx(L * 1.0) and counts[ep[-1]] == k + 1
    for t in dummy:  # reward 0, action ignored, the next episode's first observation, timer keeps counting
        assert rewards[t] == 0.0 and obs[t][-1].item() == 0.0 and not ends[t]
        torch.testing.assert_close(obs[t][:3], torch.tensor([1.0, 0.0, 0.0]))
    assert [o[-4].item() for o in obs] == pytest.approx([(t + 1) / 1000 for t in range(steps)])
    assert sum(ends) == warmup + 1 and sum(rets) == pytest.approx((warmup + 1) * L)
    assert len(game.actions) == (warmup + 1) * L  # dummy-step actions never reach the game
    assert game.resets == warmup + 2  # trial start + one reset per dummy step (the last one is never played)
    assert sum(rewards) == pytest.approx(L * 1.0)  # the trial return is the scored episode's return


def test_a_game_is_drawn_per_trial_and_task_id_names_it():
    env = MultiDomainPOPGym(64, games=GAMES, seed=0)
    td = env.reset()
    ids = td["task_id"][:, 0]
    assert 10 < int(ids.sum()) < 54  # both games drawn
    # "guess" starts at one-hot [1, 0, 0]; "grid" at [uniform draw in (0, 1), 0]
    assert torch.equal(td["observation"][:, 0].eq(1), ids.eq(0))
    # a partial reset redraws the game only where reset
    mask = torch.zeros(64, 1, dtype=torch.bool)
    mask[:32] = True
    firsts = [env.reset(td.clone().set("_reset", mask))["task_id"][:, 0] for _ in range(8)]
    assert all(torch.equal(f[32:], ids[32:]) for f in firsts)
    assert any(not torch.equal(f[:32], ids[:32]) for f in firsts)
    # reset(task=...) picks the games
    td = env.reset(task={"game": torch.ones(64, dtype=torch.int64)})
    assert td["task_id"].eq(1).all() and td["observation"][:, 1].eq(0).all()
    with pytest.raises(ValueError, match="must index games"):
        env.reset(task={"game": torch.full((64,), 2)})


def test_seeded_rollouts_repeat():
    def run():
        env = make_amago_env(make_multidomain_popgym_env(3, GAMES))
        env.set_seed(3)
        torch.manual_seed(0)
        return env.rollout(20, break_when_any_done=False)

    a, b = run(), run()
    assert torch.equal(a["observation"], b["observation"]) and torch.equal(a["task_id"], b["task_id"])
    assert torch.equal(a["next", "reward"], b["next", "reward"])


def test_check_amago_env_on_the_full_stack():
    env = make_amago_env(make_multidomain_popgym_env(3, GAMES, seed=0))
    assert env.observation_spec["task_id"].dtype == torch.int64
    data = check_amago_env(env, steps_per_env=40)
    done = data["next", "done"][..., 0]
    assert done.any()  # trials ended: the guess trial is 8 steps, the grid trial 6
    # every finished trial lasted (warmup + 1) * (episode length + 1) steps of its game
    lengths = {0: 8, 1: 6}
    ids = data["next", "task_id"][..., 0]
    t_next = data["next", "time_idx"][..., 0]
    for n, t in zip(*torch.nonzero(done, as_tuple=True)):
        assert t_next[n, t].item() == lengths[int(ids[n, t])]
    assert data["next", "terminated"][done].all() and not data["next", "truncated"].any()


def test_bad_games_are_clear_errors():
    class _Wide(_Guess):
        observation_space = gym.spaces.Discrete(27)

    class _Cont(_Grid):
        action_space = gym.spaces.Box(-1.0, 1.0, (1,), dtype=np.float32)

    with pytest.raises(ValueError, match="27-dim flat observation, more than obs_size=26"):
        MultiDomainPOPGym(1, games={"wide": _Wide})
    with pytest.raises(ValueError, match="only Discrete / MultiDiscrete"):
        MultiDomainPOPGym(1, games={"cont": _Cont})
    with pytest.raises(ValueError, match="warmup_episodes"):
        MultiDomainPOPGym(1, games=GAMES, warmup_episodes=-1)
    with pytest.raises(ValueError, match="empty"):
        MultiDomainPOPGym(1, games={})
    with pytest.raises(ValueError, match="num_envs"):
        make_multidomain_popgym_env(0, GAMES)


def test_warmup_zero_scores_the_only_episode():
    env = MultiDomainPOPGym(1, games={"guess": _Guess}, warmup_episodes=0, seed=0)
    td = env.reset()
    rewards = []
    for _ in range(4):
        td, out = _step(env, td, [1])
        rewards.append(out["next", "reward"].item())
    assert rewards == [1.0, 1.0, 1.0, 0.0] and out["next", "done"].item()
    assert td["observation"][0, -3].item() == 1.0  # episode index (no division by a zero warm-up count)


def test_missing_popgym_names_the_pip_package(monkeypatch):
    assert_missing_package_named(monkeypatch, "popgym", "pip install popgym", lambda: MultiDomainPOPGym(1),
                                 lambda: make_multidomain_popgym_env(2, ["RepeatPreviousEasy"]))


# ---------------------------------------------------------------------------------------------- real popgym
def test_real_default_games_fit_the_padded_spaces():
    pytest.importorskip("popgym")
    env = MultiDomainPOPGym(1, seed=0)
    assert env.games == list(MULTIDOMAIN_POPGYM_GAMES) and len(env.games) == 27
    assert max(env.game_obs_dims) == 26 and env.game_obs_dims[env.games.index("CountRecallHard")] == 26
    assert env.game_num_actions[env.games.index("MineSweeperEasy")] == 16  # MultiDiscrete([4, 4]) flattened
    assert env.max_trial_length == 2 * (831 + 1)  # RepeatFirstHard, warm-up + scored, with dummy steps
    with pytest.raises(ValueError, match="unknown POPGym env 'NoSuchGame'"):
        MultiDomainPOPGym(1, games=["RepeatPreviousEasy", "NoSuchGame"])


def test_real_popgym_trials():
    pytest.importorskip("popgym")
    games = ["RepeatPreviousEasy", "MineSweeperEasy"]
    env = make_amago_env(make_multidomain_popgym_env(2, games, seed=0))
    check_amago_env(env, steps_per_env=20)
    env.set_seed(0)
    td = env.reset(task={"game": torch.tensor([0, 0])})
    ro = env.rollout(104, break_when_any_done=False, auto_reset=False, tensordict=td)
    obs = ro["observation"]
    assert torch.equal(obs[..., :4].sum(-1), torch.ones(2, 104))  # one suit one-hot every step
    assert obs[..., 4:26].eq(0).all()  # padding
    end = ro["next", "episode_end"][..., 0]
    # RepeatPreviousEasy: 51-step episodes, a dummy step after each; the trial ends on step 104
    assert end[:, 50].all() and end[:, 102].all() and end.sum() == 4
    done = ro["next", "done"][..., 0]
    assert done[:, 103].all() and not done[:, :103].any()
    assert ro["next", "reward"][:, :52].eq(0).all()  # warm-up (+ its dummy step): nothing shown
    assert ro["next", "reward"][:, 52:103].ne(0).any()
    torch.testing.assert_close(ro["next", "reward"][:, :, 0].sum(1), ro["next", "episode_return"][:, 102, 0])
