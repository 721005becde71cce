"""MetaTrial on a Gymnasium env: does the task stay the same across the inner episodes of a trial?

`TaskBandit` draws its task (the rewarding arm) from its own RNG at every `reset()` and shows it as the
observation, so a rollout shows directly which task each episode had. A plain `GymEnv` has no soft reset, so every
inner episode redraws the task: MetaTrial now says so (a warning naming the fixes; `same_task=True` refuses it,
`same_task=False` accepts it silently). `SameTaskGymEnv` keeps the task for the whole trial by replaying the trial's
reset seed at every soft reset; a new trial draws a new task.
"""
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from torchrl.envs import GymEnv, SerialEnv

from torchrl_amago.envs import make_amago_env
from torchrl_amago.envs.libs import SameTaskGymEnv

ENV_ID = "TorchrlAmagoTaskBandit-v0"
K_EPISODES, EPISODE_LEN = 3, 3


class TaskBandit(gym.Env):
    observation_space = gym.spaces.Box(0, 9, (1,), np.float32)
    action_space = gym.spaces.Discrete(10)

    def __init__(self, **kwargs):  # GymEnv passes frameskip
        super().__init__()

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.goal, self.t = int(self.np_random.integers(10)), 0
        return np.array([self.goal], np.float32), {}

    def step(self, action):
        self.t += 1
        return (np.array([self.goal], np.float32), float(int(action) == self.goal), self.t >= EPISODE_LEN, False,
                {})


if ENV_ID not in gym.registry:
    gym.register(ENV_ID, entry_point=TaskBandit)


def trial_tasks(env, steps=4 * K_EPISODES * EPISODE_LEN):
    """{trial number: [task of each step]} of one env's rollout (the task is the observation)."""
    torch.manual_seed(0)
    ro = env.rollout(steps, break_when_any_done=False)
    ro = ro if ro.ndim == 2 else ro.unsqueeze(0)
    out = []
    for row in ro.unbind(0):
        trial = row["is_init"].reshape(-1).long().cumsum(0)
        tasks = row["observation"].reshape(-1)
        out.append({int(k): tasks[trial == k].tolist() for k in trial.unique()})
    return out


def test_plain_gym_env_redraws_the_task_and_says_so():
    env = make_amago_env(GymEnv(ENV_ID), k_episodes=K_EPISODES)
    with pytest.warns(UserWarning, match=r"GymEnv has no soft reset.*SameTaskGymEnv.*same_task=False"):
        tasks = trial_tasks(env)[0]
    assert any(len(set(t)) > 1 for t in tasks.values())  # the task changed inside a trial


def test_same_task_false_accepts_new_tasks_silently():
    env = make_amago_env(GymEnv(ENV_ID), k_episodes=K_EPISODES, same_task=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        env.rollout(EPISODE_LEN * K_EPISODES, break_when_any_done=False)


def test_same_task_true_refuses_an_env_without_soft_reset():
    env = make_amago_env(GymEnv(ENV_ID), k_episodes=K_EPISODES, same_task=True)
    with pytest.raises(ValueError, match=r"same_task=True.*GymEnv.*SameTaskGymEnv.*supports_soft_reset"):
        env.reset()


@pytest.mark.parametrize("batched", [False, True])
def test_same_task_gym_env_keeps_the_task_for_the_trial(batched):
    make = (lambda: SerialEnv(2, lambda: SameTaskGymEnv(ENV_ID))) if batched else (lambda: SameTaskGymEnv(ENV_ID))
    env = make_amago_env(make(), k_episodes=K_EPISODES, same_task=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        rows = trial_tasks(env)
    for tasks in rows:
        assert len(tasks) >= 4  # whole trials of 3 episodes each (and the next one started)
        for steps in tasks.values():
            assert len(set(steps)) == 1  # one task per trial, over all of its episodes
        assert len({steps[0] for steps in tasks.values()}) > 1  # a new trial draws a new task
    ends = make_amago_env(make(), k_episodes=K_EPISODES).rollout(K_EPISODES * EPISODE_LEN, break_when_any_done=False)
    assert int(ends["next", "episode_end"].sum()) == K_EPISODES * (2 if batched else 1)  # episodes really ended


def test_same_task_gym_env_is_seedable():
    a, b = SameTaskGymEnv(ENV_ID), SameTaskGymEnv(ENV_ID)
    a.set_seed(3), b.set_seed(3)
    assert [float(a.reset()["observation"]) for _ in range(5)] == [float(b.reset()["observation"]) for _ in range(5)]
