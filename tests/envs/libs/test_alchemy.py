"""Symbolic Alchemy adapter. dm_alchemy is not on PyPI, so the adapter's real loader code runs here against a stand-in
module (tests/envs/libs/alchemy_standin.py) with the same specs and trial structure; the last test uses the real
dm_alchemy when it is installed (from GitHub)."""

import pytest
import torch

from tests.envs.libs.alchemy_standin import OBS_DIM, install_fake_dm_alchemy
from torchrl_amago.envs import make_amago_env
from torchrl_amago.envs.checks import check_amago_env
from torchrl_amago.envs.libs.alchemy import (ALCHEMY_LEVEL, ALCHEMY_NUM_ACTIONS, ALCHEMY_OBS_DIM, ALCHEMY_PIP,
                                             alchemy_episode_length, make_alchemy_env, make_alchemy_torchrl)
from tests.missing_package import assert_missing_package_named


def test_constants_match_the_stand_in_and_the_original():
    assert ALCHEMY_OBS_DIM == OBS_DIM == 39 and ALCHEMY_NUM_ACTIONS == 40
    assert alchemy_episode_length() == 200  # the original's max_seq_len 201 = 200 steps + 1
    assert ALCHEMY_LEVEL == "alchemy/perceptual_mapping_randomized_with_rotation_and_random_bottleneck"


def test_missing_dm_alchemy_names_the_github_install(monkeypatch):
    install_fake_dm_alchemy(monkeypatch)  # (a fake dm_env too where it is missing, so dm_alchemy is named)
    assert_missing_package_named(monkeypatch, "dm_alchemy",
                                 "pip install git\\+https://github.com/google-deepmind/dm_alchemy.git",
                                 lambda: make_alchemy_env(2))
    assert ALCHEMY_PIP in "pip install " + ALCHEMY_PIP


def test_missing_dm_env_is_named(monkeypatch):
    assert_missing_package_named(monkeypatch, "dm_env", "pip install dm-env", make_alchemy_torchrl)


def test_specs_values_and_a_new_level_per_trial(monkeypatch):
    levels = install_fake_dm_alchemy(monkeypatch)
    env = make_alchemy_torchrl(num_trials=3, max_steps_per_trial=4)
    assert env.observation_spec["symbolic_obs"].shape == (39,) and env.observation_spec["symbolic_obs"].dtype == \
        torch.float32
    assert list(env.observation_spec.keys()) == ["symbolic_obs"]
    assert env.action_spec.n == 40
    env.set_seed(0)
    n0 = len(levels.calls)
    td = env.reset()
    assert len(levels.calls) == n0 + 1 and levels.calls[-1][0] == ALCHEMY_LEVEL
    assert levels.calls[-1][2:] == (3, 4)  # num_trials, max_steps_per_trial reach the level
    obs = td["symbolic_obs"]
    stone0 = obs[:5]
    assert stone0[4] == 0 and stone0[:3].abs().eq(1).all()  # present stone: coords in {-1, 1}, used flag 0
    # stone 0 into the cauldron (action 1): reward = its value, slot becomes empty [2, 2, 2, 2, 1]
    value = float(stone0[3]) * 15.0
    td = env.step(td.set("action", torch.tensor(1)))
    assert td["next", "reward"].item() == pytest.approx(value)
    assert td["next", "symbolic_obs"][:5].tolist() == [2, 2, 2, 2, 1]
    assert not td["next", "done"].item()
    seeds_a = [c[1] for c in levels.calls[n0:]]
    # a full dm_env episode = 3 Alchemy trials x 4 steps: done (terminated: LAST has discount 0) exactly at step 12
    ro = env.rollout(25, lambda td: td.set("action", torch.tensor(0)), break_when_any_done=False)  # resets first
    done = ro["next", "done"][:, 0]
    assert done.nonzero().squeeze(-1).tolist() == [11, 23]
    assert torch.equal(ro["next", "terminated"][:, 0], done) and not ro["next", "truncated"].any()
    assert (ro["next", "reward"] == 0).all()  # no-ops only
    assert len(levels.calls) == n0 + 4  # our reset, the rollout's reset, one after each finished trial
    assert len({c[1] for c in levels.calls[n0:]}) == 4  # every trial draws a new level seed
    env.set_seed(0)
    env.reset()
    assert levels.calls[-1][1] == seeds_a[0]  # reproducible from set_seed


def test_full_stack_over_the_stand_in(monkeypatch):
    install_fake_dm_alchemy(monkeypatch)
    H = alchemy_episode_length(2, 5)
    env = make_amago_env(make_alchemy_env(2, num_trials=2, max_steps_per_trial=5))
    env.set_seed(1)
    data = check_amago_env(env, steps_per_env=2 * H + 3)
    assert data["next", "done"][:, :, 0].sum(1).tolist() == [2, 2]
    assert data["next", "done"][:, H - 1, 0].all() and data["is_init"][:, H, 0].all()
    assert data["time_idx"][:, H - 1, 0].tolist() == [H - 1, H - 1]  # no reset between the Alchemy trials
    assert not torch.equal(data["symbolic_obs"][0, 0], data["symbolic_obs"][1, 0])  # the two envs differ


def test_real_dm_alchemy():
    pytest.importorskip("dm_alchemy")
    env = make_amago_env(make_alchemy_env(2))
    env.set_seed(0)
    data = check_amago_env(env, steps_per_env=201)
    assert data["symbolic_obs"].shape[-1] == 39
    assert data["next", "terminated"][:, 199, 0].all() and data["next", "done"][:, :, 0].sum(1).tolist() == [1, 1]
