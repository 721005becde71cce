"""Turn rollout TensorDicts ([N, T] from batched envs) into per-trial and per-episode metrics."""
from __future__ import annotations

import math
import re
from collections import defaultdict

import torch
from tensordict import TensorDictBase


def _flag(td: TensorDictBase, key) -> torch.Tensor:
    v = td.get(key)
    return v.reshape(*td.batch_size, -1)[..., 0].bool()


def _rows(rollout: TensorDictBase) -> TensorDictBase:
    return rollout if rollout.ndim == 2 else rollout.unsqueeze(0)


def _first(td: TensorDictBase, key) -> torch.Tensor:  # a per-step key as [N, T]
    return td.get(key).reshape(*td.batch_size, -1)[..., 0]


def _natural(key: str):  # episode_2 before episode_10
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", key)]


def finished_trial_returns(rollout: TensorDictBase, running: torch.Tensor | None = None
                           ) -> tuple[list[float], torch.Tensor]:
    """Returns of trials finished in `rollout` ([N, T] or [T]), and each env's partial return
    (`running`: those of the previous call)."""
    ro = _rows(rollout)
    rew, done = _first(ro, ("next", "reward")).double(), _flag(ro, ("next", "done"))
    acc = torch.zeros(ro.batch_size[0], dtype=torch.float64) if running is None else running.clone().double()
    out: list[float] = []
    for t in range(ro.batch_size[1]):
        acc += rew[:, t]
        d = done[:, t]
        if d.any():
            out += acc[d].tolist()
            acc[d] = 0
    return out, acc


class TrialReturnsById:
    """Returns of finished trials across workers' batches, partial returns carried per trajectory id."""

    def __init__(self, traj_key=("collector", "traj_ids")):
        self.traj_key = traj_key
        self.partial: dict[int, float] = {}

    def add(self, rollout: TensorDictBase) -> list[float]:
        ro = _rows(rollout)
        rew, done = _first(ro, ("next", "reward")).double(), _flag(ro, ("next", "done"))
        ids = ro.get(self.traj_key).reshape(*ro.batch_size)
        out: list[float] = []
        for row in range(ro.batch_size[0]):
            ends = done[row].nonzero().squeeze(-1).tolist()
            start = 0
            for end in ends + [ro.batch_size[1] - 1]:
                if end < start:
                    continue
                tid = int(ids[row, start])
                total = self.partial.pop(tid, 0.0) + float(rew[row, start:end + 1].sum())
                if end in ends:
                    out.append(total)
                else:
                    self.partial[tid] = total
                start = end + 1
        return out

    def drop_partial(self) -> int:
        """Forget the partial returns (the envs restart fresh trials); returns how many there were."""
        n = len(self.partial)
        self.partial.clear()
        return n


def per_task_return_metrics(rollout: TensorDictBase, returns: list[float], prefix: str,
                            task_names: list[str], task_key=("next", "task_id")) -> dict[str, float]:
    """`return_metrics` per task (`{prefix}/return/<task name>`), from the env's `task_id` key."""
    if task_key not in rollout.keys(True):
        return {}
    ro = _rows(rollout)
    done = _flag(ro, ("next", "done")).transpose(0, 1)  # time-major, as finished_trial_returns lists the returns
    by_task: dict[int, list[float]] = defaultdict(list)
    for i, r in zip(_first(ro, task_key).transpose(0, 1)[done].tolist(), returns):
        by_task[int(i)].append(r)
    out: dict[str, float] = {}
    for i in sorted(by_task):
        if not 0 <= i < len(task_names):
            raise ValueError(f"task_id {i} has no name: task_names has {len(task_names)} entries")
        out.update(return_metrics(by_task[i], prefix, task_names[i]))
    return out


def bottom_quintile(values: list[float]) -> float:
    """The 20 % quantile of `values` (NaN when empty)."""
    return float(torch.quantile(torch.tensor(values, dtype=torch.float64), 0.2)) if values else math.nan


def standard_error(values: list[float] | torch.Tensor) -> float:
    """The standard error of the mean of `values`: sample standard deviation / sqrt(n) (NaN below 2 values)."""
    x = torch.as_tensor(values, dtype=torch.float64)
    n = x.numel()
    return float(x.std()) / math.sqrt(n) if n > 1 else math.nan


def return_metrics(returns: list[float], prefix: str, env_name: str | None = None) -> dict[str, float]:
    """Mean and bottom-quintile return (the original's val metrics), the mean's standard error and the number of
    trials; NaN when no trial finished."""
    sfx = f"/{env_name}" if env_name else ""
    mean = float(sum(returns) / len(returns)) if returns else math.nan
    return {f"{prefix}/return{sfx}": mean, f"{prefix}/return_bottom_quintile{sfx}": bottom_quintile(returns),
            f"{prefix}/return_se{sfx}": standard_error(returns), f"{prefix}/trials{sfx}": float(len(returns))}


def episode_metrics(rollout: TensorDictBase, prefix: str, end_key=("next", "episode_end"),
                    count_key=("next", "episode_count"),
                    value_keys=(("next", "episode_return"), ("next", "episode_success"))) -> dict[str, float]:
    """Per-episode averages inside meta-RL trials, `{prefix}/episode_{k}_{name}` for every inner episode k."""
    if end_key not in rollout.keys(True) or count_key not in rollout.keys(True):
        return {}
    end = _flag(rollout, end_key).reshape(-1)
    idx = rollout.get(count_key).reshape(end.shape[0], -1)[..., 0].long() - 1
    sums: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    for vk in value_keys:
        if vk not in rollout.keys(True):
            continue
        name = (vk[-1] if isinstance(vk, tuple) else vk).removeprefix("episode_")
        val = rollout.get(vk).reshape(end.shape[0], -1)[..., 0].double()
        for k, v in zip(idx[end].tolist(), val[end].tolist()):
            sums[f"{prefix}/episode_{k}_{name}"] += v
            counts[f"{prefix}/episode_{k}_{name}"] += 1
    return {k: sums[k] / counts[k] for k in sorted(sums, key=_natural)}


# ---------------------------------------------------------------- in-context adaptation across attempts
#: Student's t 97.5 % quantiles for 1..30 degrees of freedom (two-sided 95 % intervals).
T95 = (12.706204736, 4.302652730, 3.182446305, 2.776445105, 2.570581836, 2.446911851, 2.364624252, 2.306004135,
       2.262157163, 2.228138852, 2.200985160, 2.178812830, 2.160368656, 2.144786688, 2.131449546, 2.119905299,
       2.109815578, 2.100922040, 2.093024054, 2.085963447, 2.079613845, 2.073873068, 2.068657610, 2.063898562,
       2.059538553, 2.055529439, 2.051830516, 2.048407142, 2.045229642, 2.042272456)


def _t95(df: int) -> float:
    """Student's t 97.5 % quantile for `df` >= 1 (above 30: 1.96 + 2.4 / df, within 0.01)."""
    return T95[df - 1] if df <= 30 else 1.96 + 2.4 / df


def _check_confidence(confidence: float) -> None:
    if confidence != 0.95:
        raise ValueError(f"confidence: the intervals are two-sided 95 % ones (confidence=0.95), got {confidence}")


def _mean_ci(x: torch.Tensor) -> tuple[float, float, float]:
    """Mean and 95 % Student-t interval of the mean of ``x`` (NaN where fewer than 1 / 2 values)."""
    n = x.numel()
    if n < 2:
        return (float(x.mean()) if n else math.nan), math.nan, math.nan
    mean, half = float(x.mean()), _t95(n - 1) * standard_error(x)
    return mean, mean - half, mean + half


def attempt_records(rollout: TensorDictBase, *, max_trial_steps: int | None = None,
                    end_key=("next", "episode_end"), count_key=("next", "episode_count"),
                    return_key=("next", "episode_return"), success_key=("next", "episode_success"),
                    done_key=("next", "done"), init_key="is_init") -> dict:
    """Per-trial outcomes of every attempt (inner episode) of a rollout ``[N, T]`` (or ``[T]``), from the
    ``episode_*`` keys of multi-episode envs and ``MetaTrial``: ``{"returns": [trials, K] float64 (NaN where a trial
    has no attempt k), "success": the same (None without ``episode_success``), "dropped": trials left out}``.

    Kept are the trials begun inside the rollout (after a ``done``, or where ``is_init`` is True at its start; without
    ``is_init``: at its start) at least ``max_trial_steps`` steps before its end (None: the longest complete trial
    seen) and ended with ``done`` (docs/api/envs.md); one begun early enough that did not finish is a ValueError.
    """
    ro = _rows(rollout)
    keys = ro.keys(True)
    for k in (end_key, count_key, return_key, done_key):
        if k not in keys:
            raise KeyError(f"attempt_records: the rollout has no {k!r} (written by the multi-episode builtin envs and "
                           f"MetaTrial)")
    N, T = ro.batch_size[0], ro.batch_size[1]
    done = _flag(ro, done_key).long()
    tidx = done.cumsum(1) - done  # index of each step's trial within its row (the done step belongs to it)
    finished = tidx < done.sum(1, keepdim=True)
    full = (tidx > 0) | _flag(ro, init_key)[:, :1] if init_key in keys else torch.ones_like(finished)
    uniq, inv = torch.unique((torch.arange(N).unsqueeze(1) * (T + 1) + tidx).reshape(-1), return_inverse=True)
    nu = uniq.numel()
    t = torch.arange(T).expand(N, T).reshape(-1)

    def per_trial(values, init, how):
        return torch.full((nu,), init, dtype=torch.long).scatter_reduce(0, inv, values, how)

    start, last_t = per_trial(t, T, "amin"), per_trial(t, -1, "amax")
    fin = per_trial(finished.reshape(-1).long(), 0, "amax").bool()
    ful = per_trial(full.reshape(-1).long(), 0, "amax").bool()
    end = _flag(ro, end_key).reshape(-1)
    att = ro.get(count_key).reshape(N * T, -1)[..., 0].long()[end] - 1
    tr = inv[end]
    if att.numel() and int(att.min()) < 0:
        raise ValueError(f"{count_key!r} must be >= 1 where {end_key!r} is True (it counts finished attempts)")
    K = int(att.max()) + 1 if att.numel() else 0
    first = torch.full((nu,), K, dtype=torch.long).scatter_reduce(0, tr, att, "amin")
    keep = fin & ful & ((first == 0) | (first == K))  # attempts recorded from the first on (or none at all)
    strict = max_trial_steps is not None
    if not strict:  # the longest complete trial seen
        lengths = (last_t - start + 1)[fin & ful]
        max_trial_steps = int(lengths.max()) if lengths.numel() else T + 1
    early = ful & (start + int(max_trial_steps) <= T)
    late = early & ~fin
    if strict and late.any():
        raise ValueError(f"attempt_records: a trial that began at step {int(start[late][0])} did not finish within "
                         f"max_trial_steps={max_trial_steps} steps (the window has {T}): max_trial_steps is too small")
    keep = keep & early

    def table(key):
        out = torch.full((nu, K), math.nan, dtype=torch.float64)
        out[tr, att] = ro.get(key).reshape(N * T, -1)[..., 0].double()[end]
        return out[keep]

    return {"returns": table(return_key), "success": table(success_key) if success_key in keys else None,
            "dropped": int((~keep).sum())}


def adaptation_report(rollout: TensorDictBase | dict, prefix: str = "eval", *, last_attempt: int | None = None,
                      max_trial_steps: int | None = None, confidence: float = 0.95, **record_keys
                      ) -> dict[str, float]:
    """In-context adaptation of meta-RL trials, from an eval rollout ``[N, T]`` or :func:`attempt_records`' dict
    (``{}`` without ``episode_*`` keys); `confidence` must be 0.95. Keys (attempts 0-based):

    - ``{prefix}/episode_{k}_return`` / ``_success`` / ``_trials``: mean over the kept trials that finished attempt k.
    - ``{prefix}/adaptation_gain_return`` (and ``_success``): the mean of *last attempt - first* over trials with two
      attempts or more (last: each trial's own, or ``last_attempt``), with its 95 % Student-t interval ``_ci_low`` /
      ``_ci_high`` (NaN below 2 trials).
    - ``{prefix}/adaptation_trials`` (the gain's trials) and ``{prefix}/adaptation_trials_dropped``.
    """
    _check_confidence(confidence)
    if isinstance(rollout, dict):
        rec = rollout
    else:
        keys = rollout.keys(True)
        if (record_keys.get("end_key", ("next", "episode_end")) not in keys
                or record_keys.get("count_key", ("next", "episode_count")) not in keys):
            return {}
        rec = attempt_records(rollout, max_trial_steps=max_trial_steps, **record_keys)
    R, S = rec["returns"], rec["success"]
    n_trials, K = R.shape
    out: dict[str, float] = {}
    has = ~torch.isnan(R)
    for k in range(K):
        ok = has[:, k]
        out[f"{prefix}/episode_{k}_return"] = float(R[ok, k].mean()) if ok.any() else math.nan
        if S is not None:
            out[f"{prefix}/episode_{k}_success"] = float(S[ok, k].mean()) if ok.any() else math.nan
        out[f"{prefix}/episode_{k}_trials"] = float(ok.sum())
    none = torch.zeros(n_trials, dtype=torch.bool)
    if last_attempt is None:
        last = (has * torch.arange(K)).argmax(-1) if K else none.long()
        use = has[:, 0] & (last >= 1) if K else none
    else:
        if last_attempt < 1:
            raise ValueError(f"last_attempt is the 0-based index of the attempt compared with attempt 0: >= 1, "
                             f"got {last_attempt}")
        last = torch.full((n_trials,), int(last_attempt), dtype=torch.long)
        use = has[:, 0] & has[:, last_attempt] if last_attempt < K else none
    rows = torch.arange(n_trials)[use]
    for name, M in (("return", R), ("success", S)):
        if M is not None:
            key = f"{prefix}/adaptation_gain_{name}"
            out[key], out[key + "_ci_low"], out[key + "_ci_high"] = _mean_ci(
                M[rows, last[use]] - M[rows, 0] if K else M.new_zeros(0))
    out[f"{prefix}/adaptation_trials"] = float(use.sum())
    out[f"{prefix}/adaptation_trials_dropped"] = float(rec["dropped"])
    return out


def combine_adaptation_reports(reports: list[dict], prefix: str = "eval", *, confidence: float = 0.95
                               ) -> dict[str, float]:
    """One adaptation gain over several seeds' :func:`adaptation_report` dicts (`confidence` must be 0.95): the mean
    of the seeds' gains (and ``episode_{k}_*``), with the interval mean +- t_{S-1} se, se the larger of
    ``sd_seeds / sqrt(S)`` and ``sqrt(sum_s se_s^2) / S`` (``se_s`` read from seed s's interval); one seed gives its own
    interval back; NaN gains are skipped. Also ``{prefix}/adaptation_seeds`` and ``{prefix}/adaptation_trials``.
    """
    _check_confidence(confidence)
    out: dict[str, float] = {}
    pattern = re.escape(prefix) + r"/episode_\d+_(return|success)"
    for k in sorted({k for r in reports for k in r if re.fullmatch(pattern, k)}, key=_natural):
        vals = [float(r[k]) for r in reports if k in r and not math.isnan(float(r[k]))]
        out[k] = sum(vals) / len(vals) if vals else math.nan
    for name in ("return", "success"):
        key = f"{prefix}/adaptation_gain_{name}"
        seeds = [r for r in reports if key in r and not math.isnan(float(r[key]))]
        if not seeds:
            continue
        lo, hi = ([float(r.get(key + end, math.nan)) for r in seeds] for end in ("_ci_low", "_ci_high"))
        trials = [int(float(r.get(f"{prefix}/adaptation_trials", 0))) for r in seeds]
        S, gains = len(seeds), torch.tensor([float(r[key]) for r in seeds], dtype=torch.float64)
        mean = float(gains.mean())
        if S == 1:
            out[key], out[key + "_ci_low"], out[key + "_ci_high"] = mean, lo[0], hi[0]
        else:
            se2 = [((b - a) / (2 * _t95(n - 1))) ** 2 for a, b, n in zip(lo, hi, trials) if n >= 2]
            within = sum(s for s in se2 if not math.isnan(s)) / S ** 2
            half = _t95(S - 1) * math.sqrt(max(float(gains.var()) / S, within))
            out[key], out[key + "_ci_low"], out[key + "_ci_high"] = mean, mean - half, mean + half
        if name == "return":
            out[f"{prefix}/adaptation_seeds"] = float(S)
            out[f"{prefix}/adaptation_trials"] = float(sum(trials))
    return out
