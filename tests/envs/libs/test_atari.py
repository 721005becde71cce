"""Atari (ALE) adapter: frame skip + max-pool, area resize, full action space, time limit in frames, unclipped
rewards, one game per slot with a task id.

Most tests run the adapter on the stand-in (tests/envs/libs/atari_standin.py: a fake ``ale_py`` module and tiny
gymnasium envs with ALE's spaces); the last ones use the real ``ale-py`` (ROMs ship in its wheel) and skip without it.
"""

import gymnasium as gym
import numpy as np
import pytest
import torch

from tests.envs.libs.atari_standin import (BRIGHT, EPISODE_FRAMES, LIFE_EVERY, REWARD, install_fake_ale, inner_ale)
from torchrl_amago.envs import make_amago_env
from torchrl_amago.envs.checks import check_amago_env
from torchrl_amago.envs.libs.atari import (AtariPreprocess, atari_action_dim, atari_game_id, atari_game_names,
                                           atari_obs_shape, buttons_to_action, make_atari_env, make_atari_gym,
                                           resize_area, slot_games)
from tests.missing_package import assert_missing_package_named


def _close(env):
    if not env.is_closed:  # the Collector inside check_amago_env already closes it
        env.close()


@pytest.fixture
def fake_ale(monkeypatch):
    return install_fake_ale(monkeypatch)


# ----------------------------------------------------------------------------------------------- pure helpers
def test_buttons_map_to_the_full_action_set():
    # [up, down, left, right, fire]
    assert buttons_to_action([0, 0, 0, 0, 0]) == 0  # NOOP
    assert buttons_to_action([0, 0, 0, 0, 1]) == 1  # FIRE
    assert buttons_to_action([1, 0, 0, 0, 0]) == 2  # UP
    assert buttons_to_action([0, 0, 0, 1, 0]) == 3  # RIGHT
    assert buttons_to_action([0, 0, 1, 0, 0]) == 4  # LEFT
    assert buttons_to_action([0, 1, 0, 0, 0]) == 5  # DOWN
    assert buttons_to_action([1, 0, 1, 0, 0]) == 7  # UPLEFT
    assert buttons_to_action([0, 1, 1, 0, 0]) == 9  # DOWNLEFT
    assert buttons_to_action([0, 0, 0, 1, 1]) == 11  # RIGHTFIRE
    assert buttons_to_action([0, 1, 0, 1, 1]) == 16  # DOWNRIGHTFIRE
    assert buttons_to_action([1, 1, 1, 1, 1]) == 1  # opposite directions cancel: FIRE only
    assert buttons_to_action([1, 1, 0, 1, 0]) == 3  # up+down cancel: RIGHT
    # all 32 button combinations land on the 18 actions, and each action is reachable
    reached = {buttons_to_action([(i >> b) & 1 for b in range(5)]) for i in range(32)}
    assert reached == set(range(18))


def test_area_resize_averages_blocks():
    img = np.arange(16, dtype=np.uint8).reshape(4, 4) * 10
    out = resize_area(img, (2, 2))
    assert out.shape == (2, 2, 1) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[..., 0], [[25, 45], [105, 125]])  # means of the 2x2 blocks
    frame = np.zeros((210, 160, 3), np.uint8)
    frame[:, 80:] = (200, 100, 50)  # right half coloured
    out = resize_area(frame, (84, 84))
    assert out.shape == (84, 84, 3)
    assert (out[:, :42] == 0).all() and (out[:, 42:] == [200, 100, 50]).all()  # 160/84 keeps the halves apart
    assert resize_area(frame, (210, 160)) is not None and np.array_equal(resize_area(frame, (210, 160)), frame)


def test_shape_and_action_dim_helpers():
    assert atari_obs_shape((84, 84)) == (3, 84, 84)
    assert atari_obs_shape((42, 40), grayscale=True) == (1, 42, 40)
    assert atari_obs_shape((42, 40), grayscale=True, channels_last=True) == (42, 40, 1)
    assert [atari_action_dim(k) for k in ("discrete", "multibinary", "continuous")] == [18, 5, 3]
    with pytest.raises(ValueError, match="action_space"):
        atari_action_dim("gamepad")
    assert slot_games(["A", "B", "C"], 7) == ["A", "B", "C", "A", "B", "C", "A"]


# ----------------------------------------------------------------------------------------------- stand-in env
def test_ale_is_built_with_frameskip_1_sticky_actions_and_the_full_action_space(fake_ale):
    env = make_atari_gym("ToyGame", sticky_action_prob=0.1, time_limit_frames=1234)
    assert inner_ale(env.env).kwargs == dict(obs_type="rgb", frameskip=1, repeat_action_probability=0.1,
                                             full_action_space=True, continuous=False,
                                             max_num_frames_per_episode=1234)
    gray = make_atari_gym("toygame", grayscale=True)  # game names are case-insensitive
    assert inner_ale(gray.env).kwargs["obs_type"] == "grayscale"
    assert env.action_space == gym.spaces.Discrete(18)


def test_frame_skip_sums_unclipped_rewards_and_max_pools_the_last_two_frames(fake_ale):
    env = make_atari_gym("OtherToy", frame_skip=4, resolution=(84, 84))
    obs, info = env.reset(seed=3)
    assert set(obs) == {"observation", "task_id"}
    assert obs["observation"].shape == (3, 84, 84) and obs["observation"].dtype == np.uint8
    assert obs["task_id"].tolist() == [0] and obs["task_id"].dtype == np.int64
    assert (obs["observation"][:, :42] == BRIGHT["OtherToy"]).all() and (obs["observation"][:, 42:] == 0).all()
    assert env.observation_space.contains(obs)
    obs, r, term, trunc, _ = env.step(7)
    assert r == 4 * REWARD["OtherToy"] == 12.0  # 4 frames, not clipped to 1
    assert inner_ale(env.env).actions == [7, 7, 7, 7] and env.frames == 4
    assert (obs["observation"] == BRIGHT["OtherToy"]).all()  # max over frames 3 (bottom) and 4 (top)
    assert not term and not trunc
    clipped = make_atari_gym("OtherToy", clip_rewards=True)
    clipped.reset()
    assert clipped.step(0)[1] == 1.0
    no_skip = make_atari_gym("OtherToy", frame_skip=1)
    no_skip.reset()
    o, r, *_ = no_skip.step(0)
    assert r == 3.0 and (o["observation"][:, 42:] == BRIGHT["OtherToy"]).all() and (o["observation"][:, :42] == 0).all()


def test_episode_end_time_limit_in_frames_and_life_loss(fake_ale):
    env = make_atari_gym("ToyGame", frame_skip=5)
    env.reset()
    steps, term = 0, False
    while not term:
        _, r, term, trunc, _ = env.step(0)
        steps += 1
        assert not trunc
    # 48 frames: 9 full steps of 5, the last step stops at the terminal frame (3 frames)
    assert steps == 10 and env.frames == EPISODE_FRAMES and r == 3.0
    env = make_atari_gym("ToyGame", frame_skip=4, time_limit_frames=18)
    env.reset()
    outs = [env.step(0) for _ in range(5)]
    assert [o[3] for o in outs] == [False, False, False, False, True]  # truncated once 18 frames were emulated
    assert not any(o[2] for o in outs) and env.frames == 18 and outs[-1][1] == 2.0  # the 5th step ran 2 frames
    env = make_atari_gym("ToyGame", frame_skip=4, terminal_on_life_loss=True)
    env.reset()
    terms = [env.step(0)[2] for _ in range(3)]
    assert terms == [False, False, True]  # a life is lost at frame LIFE_EVERY = 10, in the 3rd step
    assert LIFE_EVERY == 10


def test_grayscale_channels_last_multibinary_and_continuous_actions(fake_ale):
    env = make_atari_gym("ToyGame", grayscale=True, channels_last=True, resolution=(21, 16),
                         action_space="multibinary")
    obs, _ = env.reset()
    assert obs["observation"].shape == (21, 16, 1)
    assert env.action_space == gym.spaces.MultiBinary(5)
    env.step(np.array([0, 1, 0, 1, 1]))
    assert inner_ale(env.env).actions[-1] == 16  # DOWNRIGHTFIRE
    cont = make_atari_gym("ToyGame", action_space="continuous", frame_skip=1)
    assert inner_ale(cont.env).kwargs["continuous"] is True
    assert cont.action_space.low.tolist() == [-1.0] * 3 and cont.action_space.high.tolist() == [1.0] * 3
    cont.reset()
    cont.step(np.array([-1.0, 1.0, 0.0], np.float32))
    np.testing.assert_allclose(inner_ale(cont.env).actions[-1], [0.0, np.pi, 0.5], rtol=1e-6)


def test_wrapper_rejects_a_minimal_action_set(fake_ale):
    with pytest.raises(ValueError, match="full action space"):
        AtariPreprocess(gym.make("ALE/ToyGame-v5", full_action_space=False))
    with pytest.raises(ValueError, match="frame_skip"):
        make_atari_gym("ToyGame", frame_skip=0)


def test_unknown_and_repeated_games(fake_ale):
    assert atari_game_id("ALE/ToyGame-v5") == atari_game_id("toygame") == "ALE/ToyGame-v5"
    assert {"ToyGame", "OtherToy"} <= set(atari_game_names())
    with pytest.raises(ValueError, match="unknown Atari game 'NoSuchGame'.*ToyGame"):
        make_atari_env(["ToyGame", "NoSuchGame"], 2)
    with pytest.raises(ValueError, match="must not repeat"):
        make_atari_env(["ToyGame", "toygame"], 2)
    with pytest.raises(ValueError, match="num_envs"):
        make_atari_env("ToyGame", 0)


def test_missing_ale_py_names_the_pip_package(monkeypatch):
    assert_missing_package_named(monkeypatch, "ale_py", "pip install ale-py",
                                 atari_game_names, lambda: make_atari_env(["Pong"], 2))


def test_batched_env_one_game_per_slot_with_task_ids(fake_ale):
    env = make_amago_env(make_atari_env(["ToyGame", "OtherToy"], 4, grayscale=True, resolution=(42, 42)))
    try:
        assert env.batch_size == torch.Size([4])
        assert env.observation_spec["observation"].shape == (4, 1, 42, 42)
        assert env.observation_spec["observation"].dtype == torch.uint8
        assert env.observation_spec["task_id"].dtype == torch.int64
        assert env.action_spec.shape == (4, 18)
        data = check_amago_env(env, steps_per_env=30)  # TorchRL spec checks + AMAGO per-step alignment
        assert data["task_id"][..., 0].eq(torch.tensor([0, 1, 0, 1])[:, None]).all()
        assert data["next", "task_id"][..., 0].eq(torch.tensor([0, 1, 0, 1])[:, None]).all()
        # each slot plays its own game: its reward per frame and its screen brightness
        rew = data["next", "reward"][..., 0]
        done = data["next", "done"][..., 0]
        full = rew[~done]  # full 4-frame steps
        assert set(full[::1].tolist()) <= {4.0, 12.0}
        assert rew[0][~done[0]].eq(4.0).all() and rew[1][~done[1]].eq(12.0).all()
        assert data["observation"][1].max() == BRIGHT["OtherToy"] and data["observation"][0].max() == BRIGHT["ToyGame"]
        # an episode is 48 frames = 12 steps; the slot then hard-resets (is_init) with fresh prev_reward
        assert done[:, 11].all() and not done[:, :11].any()
        assert data["is_init"][:, 12, 0].all() and data["prev_reward"][:, 12].eq(0).all()
        assert data["time_idx"][:, 12].eq(0).all() and data["time_idx"][:, 11].eq(11).all()
    finally:
        _close(env)


def test_slot_seeds_reach_the_emulator(fake_ale):
    base = make_atari_env(["ToyGame"], 2)
    try:
        base.set_seed(7)
        base.reset()
        seeds = [[x for x in inner_ale(e._env).seeds if x is not None] for e in base._envs]
        assert seeds[0] and seeds[1] and seeds[0][-1] != seeds[1][-1]  # each slot's emulator gets its own seed
    finally:
        _close(base)


# ----------------------------------------------------------------------------------------------- real ale-py
def test_real_ale_games_specs_and_time_limit():
    pytest.importorskip("ale_py")
    names = atari_game_names()
    for g in ("Pong", "Boxing", "Breakout", "MsPacman", "RoadRunner"):
        assert g in names
    env = make_amago_env(make_atari_env(["Pong", "Boxing"], 2, time_limit_frames=40))
    try:
        assert env.observation_spec["observation"].shape == (2, 3, 84, 84)
        data = check_amago_env(env, steps_per_env=12)
        obs = data["observation"]
        assert obs.dtype == torch.uint8 and obs.float().std() > 0  # a real screen, not blank
        assert data["task_id"][:, 0, 0].tolist() == [0, 1]
        # 40 frames at frame skip 4 = 10 steps, then a truncation (not a termination) and a hard reset
        trunc, term = data["next", "truncated"][..., 0], data["next", "terminated"][..., 0]
        assert trunc[:, 9].all() and not trunc[:, :9].any() and not term[:, :10].any()
        assert data["is_init"][:, 10, 0].all()
        # the two games look different
        assert not torch.equal(obs[0, 0], obs[1, 0])
    finally:
        _close(env)


def test_real_ale_rewards_are_unclipped_and_action_variants_work():
    pytest.importorskip("ale_py")
    env = make_atari_gym("RoadRunner", grayscale=True, resolution=(42, 42))
    env.reset(seed=0)
    rewards = []
    for _ in range(400):  # hold LEFT: the road runner eats seeds worth 100 points each
        _, r, term, trunc, _ = env.step(4)
        rewards.append(r)
        if term or trunc:
            break
    assert max(rewards) >= 100.0
    mb = make_atari_gym("Pong", action_space="multibinary", resolution=(42, 42))
    mb.reset(seed=0)
    assert mb.step(np.array([1, 0, 0, 0, 1]))[0]["observation"].shape == (3, 42, 42)
    cont = make_atari_gym("Pong", action_space="continuous", resolution=(42, 42))
    cont.reset(seed=0)
    assert cont.action_space.shape == (3,)
    assert cont.step(np.zeros(3, np.float32))[0]["observation"].shape == (3, 42, 42)
