"""Offline data: D4RL/Minari-style flat arrays -> AMAGO trials, loading trials into a sequence replay, and one entry
point for the local dataset formats (a D4RL-format HDF5 file or a Minari dataset)."""
from __future__ import annotations

import os
from typing import Mapping, Sequence

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.utils import NestedKey

from .. import keys as K
from ..suites import DATASET_FORMATS
from .replay import SequenceReplayBuffer


def _as_tensor(x, name: str) -> torch.Tensor:
    try:
        return torch.as_tensor(x)
    except Exception as e:  # numpy object arrays, lists of odd shapes, ...
        raise ValueError(f"{name}: cannot convert to a tensor ({e})") from e


def _obs_dict(x, name: str, obs_key: NestedKey) -> dict:
    if isinstance(x, Mapping):
        return {k: _as_tensor(v, f"{name}[{k!r}]") for k, v in x.items()}
    return {obs_key: _as_tensor(x, name)}


def _first(bad: torch.Tensor) -> int:
    return int(bad.reshape(bad.shape[0], -1).any(-1).nonzero()[0])


def _flat_flag(x, n: int, name: str) -> torch.Tensor:
    t = _as_tensor(x, name)
    if t.numel() != n:
        raise ValueError(f"{name} must hold one flag per step ({n}), got shape {tuple(t.shape)}")
    t = t.reshape(n)
    if t.dtype != torch.bool:
        bad = (t != 0) & (t != 1)  # NaN included
        if bool(bad.any()):
            i = _first(bad)
            raise ValueError(f"{name} must hold flags (bool or 0/1): row {i} holds {t[i].item()!r}")
    return t.bool()


def _fmt(v: torch.Tensor) -> str:
    return "[" + ", ".join(f"{x:.6g}" for x in v.reshape(-1).tolist()) + "]"


def check_action_range(actions, low=-1.0, high=1.0, name: str = "actions") -> None:
    """Raise ValueError naming ``name`` and the first row with a finite action outside ``[low, high]`` (tolerance:
    1e-5 of the range)."""
    a = _as_tensor(actions, name).double()
    a = a.reshape(a.shape[0], -1) if a.dim() else a.reshape(1, 1)
    lo, hi = (torch.as_tensor(b, dtype=torch.float64).reshape(-1) for b in (low, high))
    tol = 1e-5 * (hi - lo)
    bad = torch.isfinite(a) & ((a < lo - tol) | (a > hi + tol))
    if bool(bad.any()):
        i = _first(bad)
        lo_s, hi_s = (_fmt(b) if b.numel() > 1 else _fmt(b)[1:-1] for b in (lo, hi))
        raise ValueError(f"{name}: row {i} holds {_fmt(a[i])}, outside the action range [{lo_s}, {hi_s}]"
                         + ("; continuous actions must already be in [-1, 1] (the range the policy acts in): pass "
                            "action_bounds=(low, high) to rescale env-native actions" if (low, high) == (-1.0, 1.0)
                            else ""))


def action_indices(actions, num_actions: int, name: str = "actions") -> torch.Tensor:
    """Discrete actions (indices ``[N]`` / ``[N, 1]`` of any numeric dtype, or one-hot rows) as int64 indices ``[N]``
    in ``[0, num_actions)``; a ValueError names ``name`` and the first bad row."""
    if isinstance(num_actions, bool) or not isinstance(num_actions, int) or num_actions < 1:
        raise ValueError(f"num_actions must be a positive integer, got {num_actions!r}")
    act = _as_tensor(actions, name)
    a = act
    if a.dim() == 2 and a.shape[1] == 1:
        a = a[:, 0]
    elif a.dim() == 2 and a.shape[1] == num_actions:
        one_hot = ((a == 0) | (a == 1)).all(1) & (a.sum(1) == 1)
        if not bool(one_hot.all()):
            i = _first(~one_hot)
            raise ValueError(f"{name}: [N, {num_actions}] discrete actions must be one-hot rows; row {i} is "
                             f"{a[i].tolist()}")
        a = a.long().argmax(1)
    if a.dim() != 1:
        raise ValueError(f"{name}: discrete actions (num_actions={num_actions}) must be indices [N] or [N, 1] or "
                         f"one-hot [N, {num_actions}], got shape {list(act.shape)}")
    if a.is_floating_point():
        bad = a != torch.round(a)  # NaN included
        if bool(bad.any()):
            i = _first(bad)
            raise ValueError(f"{name}: num_actions={num_actions} makes them discrete indices, but row {i} holds "
                             f"{a[i].item()!r}, not an integer")
    bad = (a < 0) | (a >= num_actions)
    if bool(bad.any()):
        i = _first(bad)
        raise ValueError(f"discrete actions must be in [0, num_actions={num_actions}): {name} row {i} holds "
                         f"{a[i].item()!r}")
    return a.long()


def arrays_to_trials(observations, actions, rewards, terminals, timeouts=None, next_observations=None, *,
                     num_actions: int | None = None, one_hot_actions: bool = False,
                     obs_key: NestedKey = "observation") -> TensorDict:
    """Flat transition arrays (D4RL / Minari style; ``observations`` an array or a mapping of arrays) -> a flat
    TensorDict ``[M]`` of consecutive trials in the package's key layout, for :func:`load_offline_trials`.

    Trials end at ``terminals`` (``terminated``), ``timeouts`` and the end of the arrays (``truncated``). Discrete
    actions need ``num_actions`` (stored one-hot with ``one_hot_actions``); continuous ones must be in ``[-1, 1]``.
    Without ``next_observations`` the successor is the next row, a terminal step repeats its own observation and a
    timeout step is dropped. A ValueError names the key and its first bad row (docs/api/data.md)."""
    obs = _obs_dict(observations, "observations", obs_key)
    rew = _as_tensor(rewards, "rewards").float()
    n = rew.numel()
    if n == 0:
        raise ValueError("arrays_to_trials got empty arrays")
    rew = rew.reshape(n)
    for k, v in obs.items():
        if v.shape[0] != n:
            raise ValueError(f"observations {k!r} has {v.shape[0]} rows, rewards has {n}")
    act = _as_tensor(actions, "actions")
    if act.dim() == 0 or act.shape[0] != n:
        raise ValueError(f"actions has {act.shape[0] if act.dim() else 0} rows, rewards has {n}")
    if num_actions is not None:
        act = action_indices(act, num_actions)
        act_feat = torch.nn.functional.one_hot(act, num_actions).float()
        stored_act = act_feat.bool() if one_hot_actions else act
    elif not act.is_floating_point() and act.dim() == 1:
        raise ValueError("integer actions of shape [N] are discrete: pass num_actions")
    else:
        act_feat = act.float().reshape(n, -1)
        check_action_range(act_feat)
        stored_act = act_feat
    term = _flat_flag(terminals, n, "terminals")
    tout = _flat_flag(timeouts, n, "timeouts") if timeouts is not None else torch.zeros(n, dtype=torch.bool)
    tout = tout & ~term
    tout[-1] |= ~term[-1]  # the data ends: an open final trial is truncated there

    if next_observations is None:
        nxt = {k: torch.cat([v[1:], v[-1:]], 0) for k, v in obs.items()}
        for k in nxt:  # terminal step: repeat its own observation
            nxt[k][term] = obs[k][term]
        idx = (~tout).nonzero().squeeze(-1)
        # a dropped timeout step truncates its trial at the step before it (if that one does not end a trial)
        tout = torch.cat([tout[1:] & ~(term | tout)[:-1], torch.zeros(1, dtype=torch.bool)])
        if idx.numel() == 0:
            raise ValueError("no transition left: every trial ends in a timeout of length 1 and "
                             "next_observations were not given")
        obs = {k: v[idx] for k, v in obs.items()}
        nxt = {k: v[idx] for k, v in nxt.items()}
        act_feat, stored_act, rew, term, tout = act_feat[idx], stored_act[idx], rew[idx], term[idx], tout[idx]
        n = idx.numel()
    else:
        if isinstance(observations, Mapping) != isinstance(next_observations, Mapping):
            raise ValueError("observations and next_observations must both be arrays or both be mappings")
        nxt = _obs_dict(next_observations, "next_observations", obs_key)
        if set(nxt) != set(obs) or any(nxt[k].shape != obs[k].shape for k in obs):
            raise ValueError("next_observations must have the same keys and shapes as observations")

    end = term | tout
    start = torch.cat([torch.ones(1, dtype=torch.bool), end[:-1]])
    first = start.nonzero().squeeze(-1)
    trial_of = start.long().cumsum(0) - 1
    time_idx = torch.arange(n) - first[trial_of]
    prev_act = torch.cat([torch.zeros_like(act_feat[:1]), act_feat[:-1]], 0)
    prev_act[start] = 0.0
    prev_rew = torch.cat([rew.new_zeros(1), rew[:-1]], 0)
    prev_rew[start] = 0.0

    col = lambda x: x.reshape(n, 1)  # noqa: E731
    root = {**obs, K.PREV_ACTION: prev_act, K.PREV_REWARD: col(prev_rew), K.TIME_IDX: col(time_idx),
            K.IS_INIT: col(start), K.ACTION: stored_act}
    nxt_td = {**nxt, K.PREV_ACTION: act_feat, K.PREV_REWARD: col(rew), K.TIME_IDX: col(time_idx + 1),
              K.IS_INIT: col(torch.zeros(n, dtype=torch.bool)), K.REWARD: col(rew), K.TERMINATED: col(term),
              K.TRUNCATED: col(tout), K.DONE: col(end)}
    td = TensorDict(root, batch_size=[n])
    td["next"] = TensorDict(nxt_td, batch_size=[n])
    return td


def split_trials(trials: TensorDictBase | Sequence[TensorDictBase],
                 done_key: NestedKey = ("next", "done")) -> tuple[TensorDictBase, torch.Tensor]:
    """Concatenation ``[sum L]`` and lengths of trials given as a list of ``[L_i]`` or a flat TensorDict."""
    if isinstance(trials, TensorDictBase):
        if trials.batch_dims != 1:
            raise ValueError(f"a flat trial TensorDict must be 1-D, got batch {tuple(trials.batch_size)}")
        if done_key not in trials.keys(True):
            raise ValueError(f"a flat trial TensorDict needs {done_key!r} to mark trial ends")
        n = trials.batch_size[0]
        done = trials.get(done_key).reshape(n).bool().clone()
        done[-1] = True  # the data ends the last trial
        ends = done.nonzero().squeeze(-1)
        return trials, torch.diff(ends, prepend=torch.tensor([-1]))
    trials = list(trials)
    if not trials:
        raise ValueError("no trials given")
    for i, tr in enumerate(trials):
        if not isinstance(tr, TensorDictBase) or tr.batch_dims != 1 or tr.batch_size[0] == 0:
            raise ValueError(f"trial {i} must be a non-empty TensorDict [L]")
    return torch.cat(trials, 0), torch.tensor([tr.batch_size[0] for tr in trials])


def screen_nonfinite_trials(data: TensorDictBase, lengths: torch.Tensor, nonfinite: str = "error",
                            report: dict | None = None) -> tuple[TensorDictBase, torch.Tensor]:
    """Trials holding NaN/inf in a float key: ``nonfinite="error"`` raises a ValueError naming the keys and the first
    bad trial; ``"drop"`` removes them and fills ``report`` with ``dropped_trials`` and ``bad_keys``."""
    if nonfinite not in ("error", "drop"):
        raise ValueError(f"nonfinite must be 'error' or 'drop', got {nonfinite!r}")
    trial_of = torch.repeat_interleave(torch.arange(lengths.numel()), lengths)
    bad_trial = torch.zeros(lengths.numel(), dtype=torch.bool)
    bad_keys: dict[str, int] = {}
    for key, v in data.items(include_nested=True, leaves_only=True):
        if not isinstance(v, torch.Tensor) or not v.is_floating_point():
            continue
        bad_step = ~torch.isfinite(v.reshape(v.shape[0], -1)).all(-1)
        if bool(bad_step.any()):
            name = "/".join(key) if isinstance(key, tuple) else str(key)
            bad_keys[name] = int((~torch.isfinite(v)).sum())
            bad_trial[trial_of[bad_step]] = True
    if report is not None:
        report.update(dropped_trials=0, bad_keys=bad_keys)
    if not bad_keys:
        return data, lengths
    first = int(bad_trial.nonzero()[0])
    if nonfinite == "error":
        raise ValueError(f"offline data holds NaN/inf in keys {bad_keys} (non-finite elements per key), first in "
                         f"trial {first} of {lengths.numel()}; clean the dataset or pass nonfinite='drop' "
                         f"(--nonfinite_data drop) to drop those {int(bad_trial.sum())} trials")
    keep = ~bad_trial
    if not bool(keep.any()):
        raise ValueError(f"every offline trial holds NaN/inf (keys {bad_keys}); nothing left to load")
    if report is not None:
        report["dropped_trials"] = int(bad_trial.sum())
    return data[keep[trial_of]], lengths[keep]


def load_offline_trials(rb: SequenceReplayBuffer, trials, *, done_key: NestedKey = ("next", "done"),
                        nonfinite: str = "error", report: dict | None = None) -> int:
    """Write whole trials (a list of ``[L_i]`` TensorDicts, or a flat one split at ``done_key``) into ``rb``, leaving
    in-progress online trials alone; returns the number written. Raises a ValueError if they do not fit;
    ``nonfinite``: see :func:`screen_nonfinite_trials`."""
    data, lengths = split_trials(trials, done_key)
    data, lengths = screen_nonfinite_trials(data, lengths, nonfinite, report)
    total = int(lengths.sum())
    if total > rb.capacity_steps:
        raise ValueError(f"offline data has {total} steps but the buffer holds capacity_steps={rb.capacity_steps}; "
                         f"build it with capacity_steps >= {total}")
    rb.extend_trials(data, lengths)
    return int(lengths.numel())


def load_dataset_trials(path: str | os.PathLike, format: str = "d4rl", *, num_actions: int | None = None,
                        action_bounds: Sequence | None = None, one_hot_actions: bool = False) -> TensorDict:
    """Trials of a local dataset for ``AMAGOTrainer(offline_data=...)``. ``action_bounds``: ``(low, high)`` of Box
    actions to rescale to ``[-1, 1]`` (None: already in range); a missing D4RL file is a FileNotFoundError."""
    if format not in DATASET_FORMATS:
        raise ValueError(f"dataset format {format!r} is not one of {list(DATASET_FORMATS)}")
    if format == "d4rl":
        from .d4rl import load_d4rl_trials

        if not os.path.exists(path):
            raise FileNotFoundError(f"dataset {str(path)!r} not found (datasets are never downloaded here)")
        return load_d4rl_trials(path, num_actions=num_actions, one_hot_actions=one_hot_actions,
                                action_bounds=action_bounds)
    from .minari import load_minari_trials

    return load_minari_trials(path, num_actions=num_actions, one_hot_actions=one_hot_actions,
                              rescale_box_actions=action_bounds is not None)
