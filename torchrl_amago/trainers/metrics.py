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


def finished_trial_returns(rollout: TensorDictBase, running: torch.Tensor | None = None
                           ) -> tuple[list[float], torch.Tensor]:
    """Returns of trials that finished inside `rollout` ([N, T] or [T]).

    `running` carries each env's partial return over from a previous rollout (trials span collector
    batches); the updated partial returns are returned for the next call.
    """
    ro = rollout if rollout.ndim == 2 else rollout.unsqueeze(0)
    rew = ro.get(("next", "reward")).reshape(*ro.batch_size, -1)[..., 0].double()
    done = _flag(ro, ("next", "done"))
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
    """Returns of finished trials when batches come from different workers (async collection): partial returns
    are carried per trajectory id (TorchRL's ``("collector", "traj_ids")``), whatever batch a trial continues in."""

    def __init__(self, traj_key=("collector", "traj_ids")):
        self.traj_key = traj_key
        self.partial: dict[int, float] = {}

    def add(self, rollout: TensorDictBase) -> list[float]:
        ro = rollout if rollout.ndim == 2 else rollout.unsqueeze(0)
        rew = ro.get(("next", "reward")).reshape(*ro.batch_size, -1)[..., 0].double()
        done = _flag(ro, ("next", "done"))
        ids = ro.get(self.traj_key).reshape(*ro.batch_size)
        out: list[float] = []
        for row in range(ro.batch_size[0]):  # per env row; a row holds a few trials at most
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
        """Forget the partial returns (after a restart the envs begin fresh trials); returns how many there were."""
        n = len(self.partial)
        self.partial.clear()
        return n


def finished_trial_values(rollout: TensorDictBase, key) -> list[float]:
    """`key`'s value at the last step of every trial that finished inside `rollout`, in the order
    `finished_trial_returns` lists the returns (time-major, then env; e.g. the `task_id` of each trial)."""
    ro = rollout if rollout.ndim == 2 else rollout.unsqueeze(0)
    done = _flag(ro, ("next", "done"))
    val = ro.get(key).reshape(*ro.batch_size, -1)[..., 0]
    return val.transpose(0, 1)[done.transpose(0, 1)].tolist()


def per_task_return_metrics(rollout: TensorDictBase, returns: list[float], prefix: str,
                            task_names: list[str], task_key=("next", "task_id")) -> dict[str, float]:
    """`return_metrics` split by the env's `task_id` key: `{prefix}/return/<task name>` for every task that
    finished a trial (multi-task envs; nothing when the rollout has no task key)."""
    if task_key not in rollout.keys(True):
        return {}
    ids = finished_trial_values(rollout, task_key)
    by_task: dict[int, list[float]] = defaultdict(list)
    for i, r in zip(ids, returns):
        by_task[int(i)].append(r)
    out: dict[str, float] = {}
    for i in sorted(by_task):
        if not 0 <= i < len(task_names):
            raise ValueError(f"task_id {i} has no name: task_names has {len(task_names)} entries")
        out.update(return_metrics(by_task[i], prefix, task_names[i]))
    return out


def bottom_quintile(values: list[float]) -> float:
    if not values:
        return math.nan
    v = torch.tensor(values, dtype=torch.float64)
    return float(torch.quantile(v, 0.2))


def return_metrics(returns: list[float], prefix: str, env_name: str | None = None) -> dict[str, float]:
    """Mean and bottom-quintile return (the original's val metrics); NaN when no trial finished."""
    sfx = f"/{env_name}" if env_name else ""
    mean = float(sum(returns) / len(returns)) if returns else math.nan
    return {f"{prefix}/return{sfx}": mean, f"{prefix}/return_bottom_quintile{sfx}": bottom_quintile(returns),
            f"{prefix}/trials{sfx}": float(len(returns))}


def episode_metrics(rollout: TensorDictBase, prefix: str, end_key=("next", "episode_end"),
                    count_key=("next", "episode_count"),
                    value_keys=(("next", "episode_return"), ("next", "episode_success"))) -> dict[str, float]:
    """Per-episode averages inside meta-RL trials: `{prefix}/episode_{k}_{name}` for every inner episode k.

    Reads the keys the env (or `MetaTrial`) writes on the step an inner episode ends (`episode_count` counts
    finished episodes, so the one ending has index count - 1); envs without inner episodes log nothing here.
    """
    if end_key not in rollout.keys(True) or count_key not in rollout.keys(True):
        return {}
    end = _flag(rollout, end_key).reshape(-1)
    idx = rollout.get(count_key).reshape(end.shape[0], -1)[..., 0].long() - 1
    sums: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    for vk in value_keys:
        if vk not in rollout.keys(True):
            continue
        name = vk[-1] if isinstance(vk, tuple) else vk
        name = name.removeprefix("episode_")
        val = rollout.get(vk).reshape(end.shape[0], -1)[..., 0].double()
        for k, v in zip(idx[end].tolist(), val[end].tolist()):
            key = f"{prefix}/episode_{k}_{name}"
            sums[key] += v
            counts[key] += 1
    def natural(key: str):  # episode_2 before episode_10
        return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", key)]

    return {k: sums[k] / counts[k] for k in sorted(sums, key=natural)}


# ---------------------------------------------------------------- in-context adaptation across attempts
def _t_quantile(p: float, df: int) -> float:
    """Quantile ``p`` (> 0.5) of Student's t with ``df`` (an int >= 1) degrees of freedom: bisection on the exact
    finite-series CDF for integer ``df`` (Abramowitz & Stegun 26.7.3-4), Hill's expansion above 300."""
    if not 0.5 < p < 1 or df < 1:
        raise ValueError(f"need 0.5 < p < 1 and df >= 1, got p={p}, df={df}")
    df = int(df)
    if df > 300:
        z = math.sqrt(2) * float(torch.erfinv(torch.tensor(2 * p - 1, dtype=torch.float64)))
        g = [(z ** 3 + z) / 4, (5 * z ** 5 + 16 * z ** 3 + 3 * z) / 96,
             (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / 384,
             (79 * z ** 9 + 776 * z ** 7 + 1482 * z ** 5 - 1920 * z ** 3 - 945 * z) / 92160]
        return z + sum(gi / df ** (i + 1) for i, gi in enumerate(g))

    def central(t: float) -> float:  # P(|T| <= t)
        th = math.atan(t / math.sqrt(df))
        s, c2 = math.sin(th), math.cos(th) ** 2
        if df % 2:
            if df == 1:
                return 2 * th / math.pi
            term = total = math.cos(th)
            for i in range(1, (df - 3) // 2 + 1):
                term *= c2 * (2 * i) / (2 * i + 1)
                total += term
            return 2 / math.pi * (th + s * total)
        term = total = 1.0
        for i in range(1, (df - 2) // 2 + 1):
            term *= c2 * (2 * i - 1) / (2 * i)
            total += term
        return s * total

    target, lo, hi = 2 * p - 1, 0.0, 1.0
    while central(hi) < target:
        hi *= 2
    for _ in range(80):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if central(mid) < target else (lo, mid)
    return (lo + hi) / 2


def _mean_ci(x: torch.Tensor, confidence: float) -> tuple[float, float, float]:
    """Mean and two-sided Student-t interval of the mean of ``x`` (NaN where fewer than 1 / 2 values)."""
    n = x.numel()
    if n == 0:
        return math.nan, math.nan, math.nan
    mean = float(x.mean())
    if n < 2:
        return mean, math.nan, math.nan
    half = _t_quantile((1 + confidence) / 2, n - 1) * float(x.std()) / math.sqrt(n)
    return mean, mean - half, mean + half


def attempt_records(rollout: TensorDictBase, *, max_trial_steps: int | None = None,
                    end_key=("next", "episode_end"), count_key=("next", "episode_count"),
                    return_key=("next", "episode_return"), success_key=("next", "episode_success"),
                    done_key=("next", "done"), init_key="is_init") -> dict:
    """Per-trial outcomes of every attempt (inner episode) in a rollout ``[N, T]`` (or ``[T]``), for
    :func:`adaptation_report`.

    Reads the bookkeeping keys that the multi-episode builtin envs and ``MetaTrial`` write under ``"next"``
    (``episode_end``, ``episode_count``, ``episode_return``, ``episode_success`` if present) and ``("next",
    "done")``; a trial runs from a hard reset to its ``done``, and the attempt that ends at an ``episode_end`` step
    has index ``episode_count - 1`` (0 = the first attempt).

    Kept trials are the *complete* ones: they began inside the rollout (after a ``done`` of their row, or at the
    row's first step if ``is_init`` is True there; a rollout without ``is_init``, such as ``env.rollout`` of a bare
    builtin env, is taken to begin at a reset) and ended with ``done`` inside it. A trial cut by the end of the
    window (or begun before it) is dropped whole, never counted with the attempts it managed, since those would
    weigh the early attempts with trials the late ones lack.

    Which trials are kept must not depend on how long they took: a fixed window fits more short trials than long
    ones, and keeping every finished trial leans the means towards short trials when trial lengths vary (in
    ``HiddenDoor`` a trial whose first attempt found the goal is shorter: under the optimal policy, over a 12-step
    window, its first-attempt mean reads 0.44 instead of 0.40). So only the trials that began at least
    ``max_trial_steps`` steps before the window's end are kept; all of them finish, whatever they do.
    ``max_trial_steps``: the longest a trial can last (``HiddenDoor.max_trial_steps``, ``k_episodes *
    max_episode_steps`` for ``MetaFrozenLake``, ``meta_horizon`` for ``DarkKeyDoor``); ``None`` (default) takes the
    longest complete trial in the rollout, which is exact once some trial reaches the bound and changes nothing for
    trials of a fixed length. A trial that began early enough for a given ``max_trial_steps`` yet did not finish
    within it is a ``ValueError``. The window should hold at least two longest trials, or few trials are kept.

    Returns a dict: ``"returns"`` ``[trials, K]`` float64 (NaN where a trial has no attempt k), ``"success"`` the
    same for ``episode_success`` (None without that key), ``"dropped"`` the number of trials left out.
    Raises ``KeyError`` naming the missing key when the rollout has no ``episode_end`` / ``episode_count``.
    """
    ro = rollout if rollout.ndim == 2 else rollout.unsqueeze(0)
    keys = ro.keys(True)
    for k in (end_key, count_key, return_key, done_key):
        if k not in keys:
            raise KeyError(f"attempt_records: the rollout has no {k!r} (written by the multi-episode builtin envs and "
                           f"MetaTrial)")
    N, T = ro.batch_size[0], ro.batch_size[1]
    done = _flag(ro, done_key).long()
    tidx = done.cumsum(1) - done  # index of each step's trial within its row (the done step belongs to it)
    finished = tidx < done.sum(1, keepdim=True)
    full = tidx > 0
    if init_key in keys:
        full = full | _flag(ro, init_key)[:, :1]
    else:
        full = torch.ones_like(full)
    gid = torch.arange(N).unsqueeze(1) * (T + 1) + tidx
    uniq, inv = torch.unique(gid.reshape(-1), return_inverse=True)
    nu = uniq.numel()
    t = torch.arange(T).expand(N, T).reshape(-1)
    start = torch.full((nu,), T, dtype=torch.long).scatter_reduce(0, inv, t, "amin")
    fin = torch.zeros(nu, dtype=torch.long).scatter_reduce(0, inv, finished.reshape(-1).long(), "amax").bool()
    ful = torch.zeros(nu, dtype=torch.long).scatter_reduce(0, inv, full.reshape(-1).long(), "amax").bool()

    end = _flag(ro, end_key).reshape(-1)
    att = ro.get(count_key).reshape(N * T, -1)[..., 0].long()[end] - 1
    tr = inv[end]
    if att.numel() and int(att.min()) < 0:
        raise ValueError(f"{count_key!r} must be >= 1 where {end_key!r} is True (it counts finished attempts)")
    K = int(att.max()) + 1 if att.numel() else 0
    first = torch.full((nu,), K, dtype=torch.long).scatter_reduce(0, tr, att, "amin")
    keep = fin & ful & ((first == 0) | (first == K))  # attempts recorded from the first on (or none at all)
    last_t = torch.full((nu,), -1, dtype=torch.long).scatter_reduce(0, inv, t, "amax")
    if max_trial_steps is None:  # the longest complete trial seen
        lengths = (last_t - start + 1)[fin & ful]
        max_trial_steps = int(lengths.max()) if lengths.numel() else T + 1
        strict = False
    else:
        strict = True
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
    """In-context adaptation across the attempts of meta-RL trials: per-attempt means and the gain from the first
    attempt to the last, with a confidence interval over trials.

    ``rollout``: an eval rollout ``[N, T]`` (e.g. ``env.rollout(T, policy, break_when_any_done=False)`` of a
    multi-episode builtin env or of a ``MetaTrial`` stack), or the dict of :func:`attempt_records` (whose
    docstring says which trials count: complete ones only; ``max_trial_steps`` and ``record_keys`` go to it).
    A rollout without the ``episode_*`` keys gives ``{}``.

    Keys (attempts are 0-based, as in ``episode_metrics``' ``{prefix}/episode_{k}_*``):

    - ``{prefix}/episode_{k}_return``, ``{prefix}/episode_{k}_success`` (with ``episode_success``): the mean over
      the complete trials that finished attempt k; ``{prefix}/episode_{k}_trials``: how many did.
    - ``{prefix}/adaptation_gain_return`` (and ``_success``): the mean over trials of the paired difference
      *last attempt - first attempt* of each trial; the last attempt is each trial's own last finished one
      (``last_attempt=None``: attempt ``K - 1`` in a fixed-``K`` trial; envs whose attempt count varies, like
      ``DarkKeyDoor``, compare each trial's first with its last), or attempt ``last_attempt`` (>= 1), in which case
      trials without it are left out. Trials with a single attempt are left out.
    - ``..._ci_low`` / ``..._ci_high``: the two-sided ``confidence`` (0.95) Student-t interval of that mean, from
      the per-trial paired differences (mean +- t_{n-1} * sd / sqrt(n)); NaN below 2 trials. Trials are taken as
      independent draws (the acting state is cleared at every hard reset).
    - ``{prefix}/adaptation_trials``: the trials the gain rests on (n); ``{prefix}/adaptation_trials_dropped``:
      the trials left out (incomplete, or begun too close to the window's end: ``attempt_records``).

    :func:`combine_adaptation_reports` merges several seeds' reports.
    """
    if isinstance(rollout, dict):
        rec = rollout
    else:
        end_key = record_keys.get("end_key", ("next", "episode_end"))
        count_key = record_keys.get("count_key", ("next", "episode_count"))
        if end_key not in rollout.keys(True) or count_key not in rollout.keys(True):
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
    if last_attempt is None:
        last = (has * torch.arange(K)).argmax(-1) if K else torch.zeros(n_trials, dtype=torch.long)
        use = has[:, 0] & (last >= 1) if K else torch.zeros(n_trials, dtype=torch.bool)
    else:
        if last_attempt < 1:
            raise ValueError(f"last_attempt is the 0-based index of the attempt compared with attempt 0: >= 1, "
                             f"got {last_attempt}")
        last = torch.full((n_trials,), int(last_attempt), dtype=torch.long)
        use = has[:, 0] & has[:, last_attempt] if last_attempt < K else torch.zeros(n_trials, dtype=torch.bool)
    rows = torch.arange(n_trials)[use]
    for name, M in (("return", R), ("success", S)):
        if M is None:
            continue
        diff = M[rows, last[use]] - M[rows, 0] if K else M.new_zeros(0)
        mean, lo, hi = _mean_ci(diff, confidence)
        out[f"{prefix}/adaptation_gain_{name}"] = mean
        out[f"{prefix}/adaptation_gain_{name}_ci_low"] = lo
        out[f"{prefix}/adaptation_gain_{name}_ci_high"] = hi
    out[f"{prefix}/adaptation_trials"] = float(use.sum())
    out[f"{prefix}/adaptation_trials_dropped"] = float(rec["dropped"])
    return out


def combine_adaptation_reports(reports: list[dict], prefix: str = "eval", *, confidence: float = 0.95
                               ) -> dict[str, float]:
    """One adaptation gain over several seeds' (final) :func:`adaptation_report` dicts, with a confidence interval
    over seeds and trials.

    Each seed counts once: the gain is the mean of the seeds' gains (``episode_{k}_*`` the mean of theirs). Its
    standard error is the larger of (a) the spread of the seed gains, ``sd_seeds / sqrt(S)``, which holds both the
    seed-to-seed variation and each seed's own trial noise, and (b) the trial noise alone,
    ``sqrt(sum_s se_s^2) / S`` with ``se_s`` read back from seed s's t interval (``confidence`` must be the one
    its report used), a floor for when few seeds happen to agree; the interval is mean +- t_{S-1} * se. A single
    seed gives its own interval back. Seeds whose gain is NaN are skipped.

    Keys: the report's ``{prefix}/episode_{k}_return|success``, ``{prefix}/adaptation_gain_{return|success}`` with
    ``_ci_low`` / ``_ci_high``, ``{prefix}/adaptation_seeds`` (seeds with a return gain) and
    ``{prefix}/adaptation_trials`` (their trials, summed).
    """
    out: dict[str, float] = {}
    attempt_keys = sorted({k for r in reports for k in r if re.fullmatch(
        re.escape(prefix) + r"/episode_\d+_(return|success)", k)},
        key=lambda k: [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", k)])
    for k in attempt_keys:
        vals = [float(r[k]) for r in reports if k in r and not math.isnan(float(r[k]))]
        out[k] = sum(vals) / len(vals) if vals else math.nan
    q = (1 + confidence) / 2
    for name in ("return", "success"):
        key = f"{prefix}/adaptation_gain_{name}"
        rows = [(float(r[key]), float(r.get(key + "_ci_low", math.nan)), float(r.get(key + "_ci_high", math.nan)),
                 int(float(r.get(f"{prefix}/adaptation_trials", 0)))) for r in reports
                if key in r and not math.isnan(float(r[key]))]
        if not rows:
            continue
        S = len(rows)
        g = torch.tensor([x[0] for x in rows], dtype=torch.float64)
        mean = float(g.mean())
        se2 = [((hi - lo) / (2 * _t_quantile(q, n - 1))) ** 2 for _, lo, hi, n in rows
               if n >= 2 and not math.isnan(lo) and not math.isnan(hi)]
        within = sum(se2) / S ** 2 if se2 else math.nan
        if S >= 2:
            se = math.sqrt(max(float(g.var()) / S, 0.0 if math.isnan(within) else within))
            half = _t_quantile(q, S - 1) * se
        else:
            half = _t_quantile(q, rows[0][3] - 1) * math.sqrt(within) if not math.isnan(within) else math.nan
        out[key], out[key + "_ci_low"], out[key + "_ci_high"] = mean, mean - half, mean + half
        if name == "return":
            out[f"{prefix}/adaptation_seeds"] = float(S)
            out[f"{prefix}/adaptation_trials"] = float(sum(x[3] for x in rows))
    return out
