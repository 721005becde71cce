"""Offline data: D4RL/Minari-style flat arrays -> AMAGO trials, and loading trials into a sequence replay."""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.utils import NestedKey

from .. import keys as K
from .replay import SequenceReplayBuffer


def _as_tensor(x, name: str) -> torch.Tensor:
    try:
        return torch.as_tensor(x)
    except Exception as e:  # numpy object arrays, lists of odd shapes, ...
        raise ValueError(f"{name}: cannot convert to a tensor ({e})") from e


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
    """Raise ValueError naming ``name`` and the first row with a finite action outside ``[low, high]`` (with a
    tolerance of 1e-5 of the range; NaN/inf are left to the non-finite screen of :func:`load_offline_trials`)."""
    a = _as_tensor(actions, name).double()
    a = a.reshape(a.shape[0], -1) if a.dim() else a.reshape(1, 1)
    lo, hi = (torch.as_tensor(b, dtype=torch.float64).reshape(-1) for b in (low, high))
    tol = 1e-5 * (hi - lo)
    bad = torch.isfinite(a) & ((a < lo - tol) | (a > hi + tol))
    if bool(bad.any()):
        i = _first(bad)
        raise ValueError(f"{name}: row {i} holds {_fmt(a[i])}, outside the action range "
                         f"[{_fmt(lo) if lo.numel() > 1 else _fmt(lo)[1:-1]}, "
                         f"{_fmt(hi) if hi.numel() > 1 else _fmt(hi)[1:-1]}]"
                         + ("; continuous actions must already be in [-1, 1] (the range the policy acts in): pass "
                            "action_bounds=(low, high) to rescale env-native actions" if (low, high) == (-1.0, 1.0)
                            else ""))


def action_indices(actions, num_actions: int, name: str = "actions") -> torch.Tensor:
    """Discrete actions as int64 indices ``[N]`` in ``[0, num_actions)``, from indices ``[N]`` or ``[N, 1]`` of any
    numeric dtype (a float must hold an integer) or one-hot rows ``[N, num_actions]``. A ValueError names ``name``
    and the first bad row."""
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


def arrays_to_trials(
    observations,
    actions,
    rewards,
    terminals,
    timeouts=None,
    next_observations=None,
    *,
    num_actions: int | None = None,
    one_hot_actions: bool = False,
    obs_key: NestedKey = "observation",
) -> TensorDict:
    """Build trials in the package's key layout from flat transition arrays (D4RL / Minari style).

    Args:
        observations: ``[N, ...]`` array, or a mapping of key -> ``[N, ...]`` array (dict observations).
        actions: with ``num_actions``, discrete: indices ``[N]`` or ``[N, 1]`` of any numeric dtype (floats must
            hold integers) or one-hot rows ``[N, num_actions]``, each in ``[0, num_actions)``; without it,
            ``[N, A]`` floats (continuous, already in [-1, 1], or multi-binary 0/1; integer ``[N]`` is an error).
        rewards, terminals, timeouts: ``[N]``; a trial ends where ``terminals | timeouts`` (and at the end
            of the arrays). ``terminals`` become ``terminated``; other ends become ``truncated``. Flags must be
            bool or 0/1.
        next_observations: ``[N, ...]`` successor observations. Without them the successor is the next row;
            a terminal step then repeats its own observation as ``"next"`` (never bootstrapped from), and a
            timeout step is dropped, because its successor is unknown (the previous step becomes the
            truncated end of that trial).
        num_actions: number of discrete actions (prev_action is one-hot of this size).
        one_hot_actions: store discrete ``"action"`` one-hot (TorchRL ``OneHot`` encoding) instead of an index.

    Returns:
        A flat TensorDict ``[M]`` of consecutive trials with ``("next", "done")`` at each trial end, the root
        and ``"next"`` views of the observations, ``prev_action``, ``prev_reward``, ``time_idx``,
        ``is_init``, plus ``action`` and ``("next", "reward"|"terminated"|"truncated"|"done")``.
        Feed it to :func:`load_offline_trials`.

    Raises:
        ValueError naming the key and its first bad row: rows that disagree in number, discrete actions that are
        not integers in ``[0, num_actions)``, continuous actions outside ``[-1, 1]``, flags other than 0/1.
    """
    obs = ({k: _as_tensor(v, f"observations[{k!r}]") for k, v in observations.items()}
           if isinstance(observations, Mapping) else {obs_key: _as_tensor(observations, "observations")})
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
        keep = ~tout
        prev_in_trial = torch.zeros(n, dtype=torch.bool)
        prev_in_trial[:-1] = ~(term | tout)[:-1]  # step t+1 belongs to step t's trial
        new_trunc = torch.zeros(n, dtype=torch.bool)
        new_trunc[:-1] = tout[1:] & prev_in_trial[:-1]  # the step before a dropped timeout ends the trial
        tout = new_trunc
        idx = keep.nonzero().squeeze(-1)
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
        nxt = ({k: _as_tensor(v, f"next_observations[{k!r}]") for k, v in next_observations.items()}
               if isinstance(next_observations, Mapping) else {obs_key: _as_tensor(next_observations,
                                                                                   "next_observations")})
        if set(nxt) != set(obs) or any(nxt[k].shape != obs[k].shape for k in obs):
            raise ValueError("next_observations must have the same keys and shapes as observations")

    end = term | tout
    start = torch.zeros(n, dtype=torch.bool)
    start[0] = True
    start[1:] = end[:-1]
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
    """Find trials holding NaN/inf in any float key (observations, rewards, actions, ...).

    ``nonfinite="error"`` raises ValueError naming the keys and the first bad trial; ``"drop"`` removes those
    trials and fills ``report`` with ``dropped_trials`` and ``bad_keys`` (non-finite elements per key).
    """
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
    """Write whole trials into ``rb`` (a list of ``[L_i]`` TensorDicts, or a flat one split at ``done_key``).

    In-progress online trials are left untouched. Returns the number of trials written. Raises ValueError if
    the data does not fit (FIFO would evict it while loading), or (``nonfinite="error"``) if a float key holds
    NaN/inf; ``nonfinite="drop"`` drops such trials and counts them in ``report`` (see
    :func:`screen_nonfinite_trials`).
    """
    data, lengths = split_trials(trials, done_key)
    data, lengths = screen_nonfinite_trials(data, lengths, nonfinite, report)
    total = int(lengths.sum())
    if total > rb.capacity_steps:
        raise ValueError(f"offline data has {total} steps but the buffer holds capacity_steps={rb.capacity_steps}; "
                         f"build it with capacity_steps >= {total}")
    rb.extend_trials(data, lengths)
    return int(lengths.numel())
