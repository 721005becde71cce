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
