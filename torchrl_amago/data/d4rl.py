"""D4RL-format HDF5 datasets (flat ``observations``, ``actions``, ``rewards``, ``terminals``, ``timeouts``, optional
``next_observations``) -> AMAGO trials, with no download (needs ``h5py``); :func:`write_cartpole_dataset` writes a
small such dataset locally."""
from __future__ import annotations

import os
from typing import Mapping, Sequence

import gymnasium as gym
import numpy as np
from tensordict import TensorDict
from tensordict.utils import NestedKey

from .._optional import require
from ..spaces import unit_box_affine
from .offline import arrays_to_trials, check_action_range
from .safe_files import open_hdf5, read_hdf5

_FEATURE = "D4RL-format HDF5 datasets (torchrl_amago.data.d4rl)"
D4RL_KEYS = ("observations", "actions", "rewards", "terminals", "timeouts", "next_observations")


def read_d4rl_hdf5(path: str | os.PathLike) -> dict:
    """The D4RL keys of an HDF5 file as numpy arrays (via ``read_hdf5``); FileNotFoundError / KeyError when missing."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"D4RL dataset file {path!r} does not exist")
    with open_hdf5(path) as f:
        missing = [k for k in ("observations", "actions", "rewards", "terminals") if k not in f]
        if missing:
            raise KeyError(f"{path}: not a D4RL dataset, missing keys {missing} (found {sorted(f.keys())})")
        return {k: read_hdf5(f, k, path) for k in D4RL_KEYS if k in f}


def _float32(x):
    if isinstance(x, Mapping):
        return {k: _float32(v) for k, v in x.items()}
    x = np.asarray(x)
    return x.astype(np.float32) if x.dtype == np.float64 else x


def rescale_actions(actions, low, high) -> np.ndarray:
    """Map env-native Box actions in ``[low, high]`` to the policy's range ``[-1, 1]`` (clipped)."""
    loc, scale = unit_box_affine(low, high, "action_bounds")
    a = np.asarray(actions, dtype=np.float32)
    return np.clip((a - loc) / scale, -1.0, 1.0).astype(np.float32)


def trials_from_arrays(data: Mapping, *, num_actions: int | None = None, one_hot_actions: bool = False,
                       action_bounds: Sequence | None = None, obs_key: NestedKey = "observation",
                       use_next_observations: bool = True) -> TensorDict:
    """D4RL-style arrays -> flat trials (float64 -> float32); ``action_bounds``: checked, rescaled to ``[-1, 1]``."""
    acts = np.asarray(data["actions"])
    if action_bounds is not None:
        check_action_range(acts, *action_bounds)
        acts = rescale_actions(acts, *action_bounds)
    nxt = data.get("next_observations") if use_next_observations else None
    return arrays_to_trials(
        _float32(data["observations"]), _float32(acts), np.asarray(data["rewards"], dtype=np.float32),
        np.asarray(data["terminals"]), data.get("timeouts"), next_observations=None if nxt is None else _float32(nxt),
        num_actions=num_actions, one_hot_actions=one_hot_actions, obs_key=obs_key)


def load_d4rl_trials(path: str | os.PathLike, *, num_actions: int | None = None, one_hot_actions: bool = False,
                     action_bounds: Sequence | None = None, obs_key: NestedKey = "observation",
                     use_next_observations: bool = True) -> TensorDict:
    """A D4RL-format HDF5 file split into AMAGO trials: a flat TensorDict ``[M]`` (see :func:`arrays_to_trials`).
    ``action_bounds``: ``(low, high)`` of Box actions not already in ``[-1, 1]`` (rescaled to it);
    ``use_next_observations``: read ``next_observations`` when the file has them. Errors name the file."""
    data = read_d4rl_hdf5(path)
    try:
        return trials_from_arrays(data, num_actions=num_actions, one_hot_actions=one_hot_actions,
                                  action_bounds=action_bounds, obs_key=obs_key,
                                  use_next_observations=use_next_observations)
    except ValueError as e:
        if os.fspath(path) in str(e):
            raise
        raise type(e)(f"D4RL dataset {os.fspath(path)}: {e}") from e


def write_d4rl_hdf5(path: str | os.PathLike, observations, actions, rewards, terminals, timeouts,
                    next_observations=None, **extra) -> str:
    """Write flat transition arrays (dict observations as groups, ``extra`` as is) as a D4RL HDF5 file at ``path``."""
    h5py = require("h5py", "h5py", _FEATURE)
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    arrays = dict(observations=observations, actions=actions, rewards=np.asarray(rewards, dtype=np.float32),
                  terminals=np.asarray(terminals, dtype=bool), timeouts=np.asarray(timeouts, dtype=bool), **extra)
    if next_observations is not None:
        arrays["next_observations"] = next_observations

    def put(group, key, value):
        if isinstance(value, Mapping):
            sub = group.create_group(key)
            for k, v in value.items():
                put(sub, k, v)
        else:
            group.create_dataset(key, data=np.asarray(value))

    with h5py.File(path, "w") as f:
        for k, v in arrays.items():
            put(f, k, v)
    return path


#: The CartPole controller pushes towards the side the pole falls to: sign of this dot product with the observation.
_EXPERT_WEIGHTS = np.array([0.1, 0.5, 10.0, 2.0])


def write_cartpole_dataset(path: str | os.PathLike, episodes: int = 100, min_noise: float = 0.3,
                           max_episode_steps: int = 200, seed: int = 0) -> dict:
    """Save a noisy CartPole-v1 controller's rollouts as a D4RL HDF5 file; returns steps, episodes and return stats."""
    if episodes < 1 or not 0.0 <= min_noise <= 1.0:
        raise ValueError(f"write_cartpole_dataset needs episodes >= 1 and min_noise in [0, 1], got "
                         f"({episodes}, {min_noise})")
    env = gym.make("CartPole-v1", max_episode_steps=max_episode_steps)
    rng = np.random.default_rng(seed)
    cols = {k: [] for k in D4RL_KEYS}
    returns = []
    for ep in range(episodes):
        noise = rng.uniform(min_noise, 1.0)
        obs, _ = env.reset(seed=seed * 100_000 + ep)
        ret, done = 0.0, False
        while not done:
            expert = int(np.dot(_EXPERT_WEIGHTS, obs) > 0)
            a = int(rng.integers(2)) if rng.random() < noise else expert
            nxt, r, term, trunc, _ = env.step(a)
            for k, v in zip(D4RL_KEYS, (obs, a, r, term, trunc and not term, nxt)):
                cols[k].append(v)
            ret, obs, done = ret + r, nxt, term or trunc
        returns.append(ret)
    env.close()
    floats = ("observations", "next_observations", "rewards")
    arrays = {k: np.asarray(v, dtype=np.float32 if k in floats else None) for k, v in cols.items()}
    write_d4rl_hdf5(path, **arrays)
    return {"steps": int(len(arrays["rewards"])), "episodes": episodes, "return_mean": float(np.mean(returns)),
            "return_min": float(np.min(returns)), "return_max": float(np.max(returns))}


__all__ = ["read_d4rl_hdf5", "load_d4rl_trials", "trials_from_arrays", "write_d4rl_hdf5", "rescale_actions",
           "D4RL_KEYS", "write_cartpole_dataset"]
