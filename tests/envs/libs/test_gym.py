"""torchrl_amago.envs.libs.gym: any gymnasium env with Box actions rescaled to [-1, 1], discrete actions one-hot or
as indices, time limits, and the native action info an offline dataset of the env stores."""
import numpy as np
import pytest
import torch

from torchrl_amago.envs.libs import gym_action_info, gym_time_limit, make_gym_env, make_gym_envs


def test_box_actions_are_rescaled_to_the_unit_box():
    env = make_gym_env("Pendulum-v1")  # native bounds [-2, 2]
    assert torch.all(env.action_spec.space.low == -1) and torch.all(env.action_spec.space.high == 1)
    env.set_seed(0)
    td = env.reset()
    # the policy's +1 is the env's +2: Pendulum's torque enters its cost as 0.001 * u^2
    out = env.step(td.set("action", torch.ones(1)))
    theta, theta_dot = np.arctan2(td["observation"][1].item(), td["observation"][0].item()), td["observation"][2].item()
    angle = (theta + np.pi) % (2 * np.pi) - np.pi
    expected = -(angle ** 2 + 0.1 * theta_dot ** 2 + 0.001 * 2.0 ** 2)
    assert out["next", "reward"].item() == pytest.approx(expected, rel=1e-5)
    env.close()


def test_discrete_actions_one_hot_or_indices_and_time_limit():
    env = make_gym_env("CartPole-v1")
    assert env.action_spec.shape[-1] == 2  # one-hot
    env.close()
    env = make_gym_env("CartPole-v1", categorical_actions=True)
    assert env.action_spec.shape == torch.Size([]) and env.action_spec.space.n == 2
    env.close()
    envs = make_gym_envs("CartPole-v1", 3, max_episode_steps=5)
    assert envs.batch_size == torch.Size([3])
    ro = envs.rollout(5, break_when_any_done=False)
    assert ro["next", "truncated"][:, -1].all() or ro["next", "terminated"].any(-2).all()
    envs.close()
    assert gym_time_limit("CartPole-v1") == 500 and gym_time_limit("CartPole-v1", 7) == 7
    with pytest.raises(ValueError, match="max_episode_steps"):
        import gymnasium as gym

        gym.register("NoLimit-v0", entry_point="gymnasium.envs.classic_control:CartPoleEnv")
        gym_time_limit("NoLimit-v0")


def test_native_action_info():
    assert gym_action_info("CartPole-v1") == (2, None)
    n, (low, high) = gym_action_info("Pendulum-v1")
    assert n is None and low.tolist() == [-2.0] and high.tolist() == [2.0]
    assert gym_action_info("MountainCarContinuous-v0") == (None, None)  # already in [-1, 1]
