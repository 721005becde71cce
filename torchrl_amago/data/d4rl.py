"""D4RL-format HDF5 datasets -> AMAGO trials (for the sequence replay), with no download.

A D4RL file (what ``d4rl``'s ``env.get_dataset()`` returns, saved with h5py) holds flat per-transition arrays:
``observations [N, ...]``, ``actions [N, ...]``, ``rewards [N]``, ``terminals [N]``, ``timeouts [N]`` and, in
newer datasets, ``next_observations [N, ...]``. :func:`load_d4rl_trials` splits them into trials at
``terminals | timeouts`` with :func:`torchrl_amago.data.arrays_to_trials` (``terminals`` -> ``terminated``,
``timeouts`` -> ``truncated``; ``prev_action``/``prev_reward``/``time_idx``/``is_init`` as in the key contract) and
returns one flat TensorDict ready for :func:`load_offline_trials` or ``AMAGOTrainer(offline_data=...)``.

Unlike the original's ``D4RLDataset`` we keep the first episode and give every trial ``time_idx`` of the right
length. ``h5py`` is optional and imported lazily (``pip install h5py``).
"""
from __future__ import annotations

import os
from typing import Mapping, Sequence

import numpy as np
from tensordict import TensorDict
from tensordict.utils import NestedKey

from .._optional import require
from ..spaces import unit_box_affine
from .offline import arrays_to_trials, check_action_range
from .safe_files import open_hdf5, read_hdf5

_FEATURE = "D4RL-format HDF5 datasets (torchrl_amago.data.d4rl)"
D4RL_KEYS = ("observations", "actions", "rewards", "terminals", "timeouts", "next_observations")


def _h5py():
    return require("h5py", "h5py", _FEATURE)


def read_d4rl_hdf5(path: str | os.PathLike) -> dict:
    """Read the D4RL keys of an HDF5 file into numpy arrays (``observations`` may be a dict for a Group).

    Raises FileNotFoundError for a missing file and KeyError naming the missing required keys. Only these keys are
    read, as numeric arrays (:func:`~torchrl_amago.data.safe_files.read_hdf5`: object, string and variable-length
    data, links and external storage raise ``UnsafeFileError`` naming the file); other members and attributes are
    never read.
    """
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
    """D4RL-style dict of arrays -> flat trial TensorDict (see module docstring). float64 becomes float32.

    With ``action_bounds``, actions outside ``[low, high]`` raise a ValueError naming the first bad row; the others
    are rescaled to ``[-1, 1]``."""
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
    """Read a D4RL-format HDF5 file and split it into AMAGO trials.

    Args:
        path: the ``.hdf5`` file.
        num_actions: number of discrete actions when ``actions`` are integer indices ``[N]``.
        one_hot_actions: store discrete ``"action"`` one-hot (match an env with a ``OneHot`` action spec).
        action_bounds: ``(low, high)`` of the env's Box actions when they are not already in ``[-1, 1]``; the
            actions are rescaled to ``[-1, 1]`` (the range AMAGO's policy acts in).
        obs_key: key for array observations (dict observations keep their own keys).
        use_next_observations: use ``next_observations`` when the file has them (else the successor is the next
            row and timeout steps, whose successor is unknown, are dropped).
    Returns:
        a flat TensorDict ``[M]`` of consecutive trials (``("next", "done")`` at each trial end).

    Refused with an error naming the file (and the key and first bad row): a file that is not HDF5, members that are
    not numeric arrays or larger than the memory available (:func:`~torchrl_amago.data.safe_files.read_hdf5`),
    discrete actions that are not integers in ``[0, num_actions)``, continuous actions outside ``action_bounds``
    (or outside ``[-1, 1]`` without them), ``terminals`` / ``timeouts`` other than 0/1.
    """
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
    """Write flat transition arrays as a D4RL-format HDF5 file (e.g. a dataset you collected yourself).

    ``observations``/``next_observations`` may be dicts (written as HDF5 groups). Extra arrays are stored as is.
    Returns the path.
    """
    h5py = _h5py()
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


__all__ = ["read_d4rl_hdf5", "load_d4rl_trials", "trials_from_arrays", "write_d4rl_hdf5", "rescale_actions",
           "D4RL_KEYS"]
