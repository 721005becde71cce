"""Builtin envs under gymnasium ids, so the generic gymnasium path reaches them (``examples/01_basic_gym.py --env
torchrl_amago/BernoulliBandit-k5-n10-v0``): one gymnasium episode is one whole trial (docs/api/envs.md)."""
from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
from tensordict import TensorDict

from .bandit import BernoulliBandit
from .hidden_door import HiddenDoor

NAMESPACE = "torchrl_amago"
#: The (arms, pulls) of the registered ``torchrl_amago/BernoulliBandit-k{arms}-n{pulls}-v0`` ids.
BANDIT_SIZES = [(k, n) for k in (2, 5, 10) for n in (10, 20, 50, 100)]


class TrialAsGym(gym.Env):
    """One unbatched builtin env (``env_cls(None, **kwargs)``) as a gymnasium env: an episode is a whole trial (its
    attempts inside it), the action a ``Discrete`` index, the observation the env's ``observation`` as a Box."""

    metadata = {"render_modes": []}

    def __init__(self, env_cls, **kwargs):
        self.env = env_cls(None, categorical_action_encoding=True, **kwargs)
        spec = self.env.observation_spec["observation"]
        self.observation_space = gym.spaces.Box(spec.space.low.numpy(), spec.space.high.numpy(), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(self.env.n_actions)

    def reset(self, *, seed: int | None = None, options=None):
        super().reset(seed=seed)
        if seed is not None:
            self.env.set_seed(seed)
        return self.env.reset()["observation"].numpy(), {}

    def step(self, action):
        nxt = self.env.step(TensorDict(action=torch.as_tensor(int(action))))["next"]
        return (nxt["observation"].numpy(), float(nxt["reward"]), bool(nxt["terminated"]), bool(nxt["truncated"]),
                {})


def register_ids() -> None:
    """Register ``torchrl_amago/BernoulliBandit-v0`` (5 arms, 10 pulls; keywords of ``BernoulliBandit`` pass
    through ``gymnasium.make``), the ``BANDIT_SIZES`` ids, and ``torchrl_amago/HiddenDoor-v0``."""
    ids = {"BernoulliBandit-v0": (BernoulliBandit, {}), "HiddenDoor-v0": (HiddenDoor, {}),
           **{f"BernoulliBandit-k{k}-n{n}-v0": (BernoulliBandit, dict(n_arms=k, n_pulls=n)) for k, n in BANDIT_SIZES}}
    for name, (cls, kw) in ids.items():
        if f"{NAMESPACE}/{name}" not in gym.registry:
            gym.register(f"{NAMESPACE}/{name}", entry_point=TrialAsGym, kwargs=dict(env_cls=cls, **kw))
