"""A small D4RL-format CartPole dataset written locally (no download): a scripted balancing controller whose
actions are replaced by random ones with a per-episode probability drawn from ``[min_noise, 1]``.

Used by ``examples/14_offline.py --make_dataset`` and its tests, so offline RL runs end to end without a download.
"""
from __future__ import annotations

import os

import gymnasium as gym
import numpy as np

from .d4rl import write_d4rl_hdf5

__all__ = ["write_cartpole_dataset"]

_COLUMNS = ("observations", "actions", "rewards", "terminals", "timeouts", "next_observations")
#: The controller pushes towards the side the pole falls to: sign of this dot product with the observation.
_EXPERT_WEIGHTS = np.array([0.1, 0.5, 10.0, 2.0])


def write_cartpole_dataset(path: str | os.PathLike, episodes: int = 100, min_noise: float = 0.3,
                           max_episode_steps: int = 200, seed: int = 0) -> dict:
    """Roll out the noisy scripted controller on CartPole-v1 and save a D4RL-format HDF5 file at ``path``.

    Returns the dataset's statistics: steps, episodes, mean / min / max episode return."""
    if episodes < 1 or not 0.0 <= min_noise <= 1.0:
        raise ValueError(f"write_cartpole_dataset needs episodes >= 1 and min_noise in [0, 1], got "
                         f"({episodes}, {min_noise})")
    env = gym.make("CartPole-v1", max_episode_steps=max_episode_steps)
    rng = np.random.default_rng(seed)
    cols = {k: [] for k in _COLUMNS}
    returns = []
    for ep in range(episodes):
        noise = rng.uniform(min_noise, 1.0)
        obs, _ = env.reset(seed=seed * 100_000 + ep)
        ret, done = 0.0, False
        while not done:
            expert = int(np.dot(_EXPERT_WEIGHTS, obs) > 0)
            a = int(rng.integers(2)) if rng.random() < noise else expert
            nxt, r, term, trunc, _ = env.step(a)
            for k, v in zip(_COLUMNS, (obs, a, r, term, trunc and not term, nxt)):
                cols[k].append(v)
            ret, obs, done = ret + r, nxt, term or trunc
        returns.append(ret)
    env.close()
    floats = ("observations", "next_observations", "rewards")
    arrays = {k: np.asarray(v, dtype=np.float32 if k in floats else None) for k, v in cols.items()}
    write_d4rl_hdf5(path, **arrays)
    return {"steps": int(len(arrays["rewards"])), "episodes": episodes, "return_mean": float(np.mean(returns)),
            "return_min": float(np.min(returns)), "return_max": float(np.max(returns))}
