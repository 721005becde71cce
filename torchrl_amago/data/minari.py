"""Local Minari datasets (no download) -> AMAGO trials for the sequence replay. A dataset's ``data/`` folder (under
``$MINARI_DATASETS_PATH``, default ``~/.minari/datasets``) holds ``metadata.json`` and ``main_data.hdf5``, one group
``episode_<i>`` per episode. :func:`load_minari_trials` reads it directly (``h5py``), or with the ``minari`` package
for other formats, and makes every episode one trial."""
from __future__ import annotations

import json
import os
import pathlib
from typing import Iterable, Iterator, Mapping

import numpy as np
from tensordict import TensorDict
from tensordict.utils import NestedKey

from .._optional import available, require
from .d4rl import _float32, rescale_actions
from .offline import _flat_flag, arrays_to_trials, check_action_range
from .safe_files import UnsafeFileError, load_json, open_hdf5, read_hdf5

_FEATURE = "Minari datasets (torchrl_amago.data.minari)"
MAIN_FILE = "main_data.hdf5"
METADATA_FILE = "metadata.json"
EPISODE_KEYS = ("observations", "actions", "rewards", "terminations", "truncations")


def minari_datasets_root() -> pathlib.Path:
    """Where ``minari`` keeps local datasets: ``$MINARI_DATASETS_PATH`` or ``~/.minari/datasets``."""
    root = os.environ.get("MINARI_DATASETS_PATH")
    return pathlib.Path(root) if root else pathlib.Path.home() / ".minari" / "datasets"


def _check_dataset_id(dataset: str, root: pathlib.Path) -> pathlib.Path:
    """The ``data/`` folder of the dataset id ``dataset`` (a name such as ``"D4RL/door/human-v2"``) under ``root``;
    an id that is not a name, or leads outside ``root``, raises a ValueError."""
    parts = dataset.split("/")
    if (not dataset or dataset.startswith("/") or "\\" in dataset or "\0" in dataset or pathlib.PurePath(dataset).anchor
            or any(p in ("", ".", "..") for p in parts)):
        raise ValueError(f"Minari dataset id {dataset!r} is not a name under the datasets root {root} (an id has no "
                         f"'..', '.', empty part or absolute path); pass the dataset's folder as a path instead")
    data = root / dataset / "data"
    if data.exists() and root.resolve() not in data.resolve().parents:
        raise ValueError(f"Minari dataset id {dataset!r}: {data} leads outside the datasets root {root} (a symlink); "
                         f"refused")
    return data


def resolve_minari_data_path(dataset: str | os.PathLike) -> pathlib.Path:
    """The ``data/`` folder of a dataset given as a path (to it or its dataset folder) or as a dataset id under
    :func:`minari_datasets_root`; a FileNotFoundError lists what was tried."""
    p = pathlib.Path(dataset)
    for cand in (p, p / "data"):
        if (cand / METADATA_FILE).is_file():
            return cand
    cand = _check_dataset_id(str(dataset), minari_datasets_root())
    if (cand / METADATA_FILE).is_file():
        return cand
    tried = [str(p), str(p / "data"), str(cand)]
    raise FileNotFoundError(f"no Minari dataset at {dataset!r} (looked for {METADATA_FILE} in {tried}); "
                            "datasets are never downloaded here: create or download it first")


def read_minari_metadata(data_path: str | os.PathLike) -> dict:
    """``metadata.json`` of a dataset (JSON only), with ``observation_space``/``action_space`` parsed."""
    file = pathlib.Path(data_path) / METADATA_FILE
    meta = load_json(file)
    if not isinstance(meta, dict):
        raise UnsafeFileError(f"{file} holds a JSON {type(meta).__name__}, not an object")
    for k in ("observation_space", "action_space"):
        if isinstance(meta.get(k), str):
            try:
                meta[k] = json.loads(meta[k])
            except json.JSONDecodeError as e:
                raise UnsafeFileError(f"{file}: {k} is not a JSON-serialised space ({e})") from e
    return meta


def iterate_minari_episodes_hdf5(data_path: str | os.PathLike) -> Iterator[dict]:
    """Episodes of a Minari HDF5 dataset (numeric arrays only) in id order: dicts of ``observations`` (``L+1``
    rows), ``actions``, ``rewards``, ``terminations``, ``truncations``."""
    require("h5py", "h5py", _FEATURE)
    file = pathlib.Path(data_path) / MAIN_FILE
    if not file.is_file():
        fmt = read_minari_metadata(data_path).get("data_format")
        raise FileNotFoundError(f"{file} not found (data_format={fmt!r}); the direct reader handles HDF5 datasets "
                                "only: install minari to read other formats")
    with open_hdf5(file) as f:
        names = sorted((k for k in f.keys() if k.startswith("episode_") and k[8:].isdigit()), key=lambda k: int(k[8:]))
        for name in names:
            yield {"id": int(name[8:]), **read_hdf5(f, name, file, keys=EPISODE_KEYS)}  # numeric arrays only


def iterate_minari_episodes(data_path: str | os.PathLike, backend: str = "auto") -> Iterator[dict]:
    """Episodes as dicts, read by ``backend``: ``"hdf5"`` (:func:`iterate_minari_episodes_hdf5`), ``"minari"`` (the
    package, with its own readers) or ``"auto"`` (hdf5 for an HDF5 dataset, else minari when installed)."""
    if backend not in ("auto", "minari", "hdf5"):
        raise ValueError(f"backend must be 'auto', 'minari' or 'hdf5', got {backend!r}")
    if backend == "minari" or (backend == "auto" and available("minari")
                               and not (pathlib.Path(data_path) / MAIN_FILE).is_file()):
        minari = require("minari", "minari", _FEATURE)
        for ep in minari.MinariDataset(str(data_path)).iterate_episodes():
            yield {"id": ep.id, **{k: getattr(ep, k) for k in EPISODE_KEYS}}
    else:
        yield from iterate_minari_episodes_hdf5(data_path)


def _rows(x, sl):
    return {k: _rows(v, sl) for k, v in x.items()} if isinstance(x, Mapping) else np.asarray(x)[sl]


def _cat(parts: list):
    if isinstance(parts[0], Mapping):
        return {k: _cat([p[k] for p in parts]) for k in parts[0]}
    return np.concatenate(parts, 0)


def episodes_to_trials(episodes: Iterable[Mapping], *, num_actions: int | None = None, action_start: int = 0,
                       one_hot_actions: bool = False, action_bounds=None,
                       obs_key: NestedKey = "observation") -> TensorDict:
    """Minari-style episodes -> one flat trial TensorDict (one trial per episode; discrete actions shifted by
    ``-action_start``). A ValueError names the episode, the key and the first bad row."""
    obs, nxt, acts, rews, terms, touts = [], [], [], [], [], []
    for ep in episodes:
        n = len(ep["rewards"])
        if n == 0:
            continue
        eid = ep.get("id")
        o = _float32(ep["observations"])
        first = next(iter(o.values())) if isinstance(o, Mapping) else o
        if len(first) != n + 1:
            raise ValueError(f"episode {eid}: {len(first)} observations for {n} steps (expected {n + 1})")
        obs.append(_rows(o, slice(0, n)))
        nxt.append(_rows(o, slice(1, n + 1)))
        a = np.asarray(ep["actions"])
        if num_actions is not None:
            check_action_range(a.reshape(len(a), -1), action_start, action_start + num_actions - 1,
                               f"episode {eid}: actions (Discrete(n={num_actions}, start={action_start}))")
        elif action_bounds is not None:
            check_action_range(a, *action_bounds, f"episode {eid}: actions")
        acts.append(a - action_start if num_actions is not None else a)
        rews.append(np.asarray(ep["rewards"], dtype=np.float32).reshape(n))
        term = _flat_flag(ep["terminations"], n, f"episode {eid}: terminations").numpy().copy()
        trunc = _flat_flag(ep["truncations"], n, f"episode {eid}: truncations").numpy().copy()
        trunc[-1] |= ~term[-1]  # an episode that just stops ends its trial as a truncation
        terms.append(term)
        touts.append(trunc & ~term)
    if not rews:
        raise ValueError("no non-empty episode in the dataset")
    act = _cat(acts)
    if action_bounds is not None:
        act = rescale_actions(act, *action_bounds)
    return arrays_to_trials(_cat(obs), _float32(act), _cat(rews), _cat(terms), _cat(touts),
                            next_observations=_cat(nxt), num_actions=num_actions, one_hot_actions=one_hot_actions,
                            obs_key=obs_key)


def _action_info(space: Mapping | None, file="metadata.json"):
    """(num_actions, start, Box bounds or None) of a serialised gymnasium action space (a ValueError names ``file``)."""
    if not space:
        return None, 0, None
    if not isinstance(space, Mapping):
        raise ValueError(f"{file}: action_space is not a serialised gymnasium space")
    if space.get("type") == "Discrete":
        n, start = space.get("n"), space.get("start", 0)
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"{file}: action_space.n must be a positive integer, got {n!r}")
        if isinstance(start, bool) or not isinstance(start, int):
            raise ValueError(f"{file}: action_space.start must be an integer, got {start!r}")
        return n, start, None
    if space.get("type") == "Box":
        try:
            low, high = np.asarray(space["low"], np.float32), np.asarray(space["high"], np.float32)
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{file}: action_space low/high are not arrays of numbers ({e})") from e
        if np.isfinite(low).all() and np.isfinite(high).all() and not (np.all(low == -1) and np.all(high == 1)):
            return None, 0, (low, high)
    return None, 0, None


def load_minari_trials(dataset: str | os.PathLike, *, backend: str = "auto", num_actions: int | None = None,
                       one_hot_actions: bool = False, rescale_box_actions: bool = True,
                       obs_key: NestedKey = "observation") -> TensorDict:
    """A local Minari dataset (a path or a dataset id, see :func:`resolve_minari_data_path`) as one flat trial
    TensorDict for ``AMAGOTrainer(offline_data=...)``. Bounded Box actions are rescaled to ``[-1, 1]`` when
    ``rescale_box_actions``; ``num_actions`` is read from a ``Discrete`` action space unless given."""
    data_path = resolve_minari_data_path(dataset)
    meta = read_minari_metadata(data_path)
    n, start, bounds = _action_info(meta.get("action_space"), data_path / METADATA_FILE)
    n = n if num_actions is None else num_actions
    try:
        return episodes_to_trials(iterate_minari_episodes(data_path, backend), num_actions=n, action_start=start,
                                  one_hot_actions=one_hot_actions,
                                  action_bounds=bounds if rescale_box_actions else None, obs_key=obs_key)
    except ValueError as e:
        if str(data_path) in str(e):
            raise
        raise type(e)(f"Minari dataset {data_path}: {e}") from e


__all__ = ["load_minari_trials", "episodes_to_trials", "iterate_minari_episodes", "iterate_minari_episodes_hdf5",
           "read_minari_metadata", "resolve_minari_data_path", "minari_datasets_root"]
