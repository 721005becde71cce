"""Hindsight relabeling of whole trials (AMAGO's "hindsight instruction replay"): with
``make_sequence_replay(..., trial_transform=HindsightRelabel(...))`` every sampled trial is relabeled whole, then cut
into a window. The env-specific part (reward and termination for the new goals) is a user function;
:func:`sequential_goal_rewards` is the MazeRunner rule."""
from __future__ import annotations

from typing import Callable, NamedTuple

import torch
from tensordict import TensorDictBase
from tensordict.utils import NestedKey, unravel_key

from .. import keys as K

STRATEGIES = ("none", "all", "some")


class RelabelResult(NamedTuple):
    """What the env would have produced over a trial of L steps for the new goals (or a plain tuple of the three):
    rewards [L], terminated [L] bool (the trial ends at the first True), goals [L+1, k, *G] (per obs index)."""

    rewards: torch.Tensor
    terminated: torch.Tensor
    goals: torch.Tensor


RelabelFn = Callable[[torch.Tensor, torch.Tensor], "RelabelResult | tuple"]


def sequential_goal_rewards(achieved: torch.Tensor, goals: torch.Tensor, *, reward: float = 1.0,
                            completed_value: int | float = -1) -> RelabelResult:
    """Replay a k-goal sequence over achieved positions ``[L+1, *G]`` (MazeRunner rule): goal j is reached at the
    first obs index t after goal j-1's with ``achieved[t] == goals[j]`` (t >= 1); transition t-1 gets ``reward``, the
    goal's row reads ``completed_value`` from t on, and reaching the last goal terminates."""
    n_obs, k = achieved.shape[0], goals.shape[0]
    match = (achieved[:, None] == goals[None]).reshape(n_obs, k, -1).all(-1)  # [L+1, k]
    t = torch.arange(n_obs)
    rewards = torch.zeros(n_obs - 1)
    terminated = torch.zeros(n_obs - 1, dtype=torch.bool)
    seq = goals.expand(n_obs, *goals.shape).clone()
    prev = 0
    for j in range(k):
        hit = (match[:, j] & (t > prev)).nonzero()
        if hit.numel() == 0:
            break
        prev = int(hit[0, 0])
        rewards[prev - 1] = reward
        seq[prev:, j] = completed_value
        if j == k - 1:
            terminated[prev - 1] = True
    return RelabelResult(rewards, terminated, seq)


class HindsightRelabel:
    """Relabel the goals of whole trials: a ``trial_transform`` (one trial ``[L]``, cut after a new terminal) or a
    stock replay-buffer ``transform`` (``[B, T]`` windows or a flat batch of slices: same shape, steps after a new
    terminal masked). Semantics: docs/api/data.md, "Relabeling".

    Args:
        relabel_fn: ``(achieved [L+1, *G], new_goals [k, *G]) -> RelabelResult`` reproducing the env exactly.
        strategy: ``"none"``, ``"all"`` (fill every unreached goal slot with achieved positions) or ``"some"`` (a
            uniform number of them; the original's default).
        goals_key / achieved_key: observation keys (root and ``"next"``) of the goal sequence ``[k, *G]`` and the
            achieved position; reward_key, prev_reward_key, terminated_key, done_key, init_key: key names.
        time_key: steps since the hard reset (0 starts a trial). mask_keys: batch validity masks. generator: RNG."""

    def __init__(self, relabel_fn: RelabelFn = sequential_goal_rewards, strategy: str = "some", *,
                 goals_key: NestedKey = "goals", achieved_key: NestedKey = "achieved",
                 reward_key: NestedKey = ("next", "reward"), prev_reward_key: NestedKey = "prev_reward",
                 terminated_key: NestedKey = ("next", "terminated"), done_key: NestedKey = ("next", "done"),
                 init_key: NestedKey | None = K.IS_INIT, time_key: NestedKey | None = K.TIME_IDX,
                 mask_keys: tuple = (K.MASK, K.TORCHRL_MASK), generator: torch.Generator | None = None):
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
        self.relabel_fn, self.strategy, self.generator = relabel_fn, strategy, generator
        self.goals_key, self.achieved_key = goals_key, achieved_key
        self.reward_key, self.prev_reward_key = reward_key, prev_reward_key
        self.terminated_key, self.done_key = terminated_key, done_key
        self.init_key, self.time_key, self.mask_keys = init_key, time_key, tuple(mask_keys)

    def choose_goals(self, trial: TensorDictBase) -> torch.Tensor | None:
        """New goal sequence ``[k, *G]`` for this trial, or None when nothing changes."""
        goals0 = trial.get(self.goals_key)[0]
        k, gshape = goals0.shape[0], goals0.shape[1:]
        achieved = self.achieved_sequence(trial, gshape)
        hit = ((trial.get(self.reward_key).reshape(trial.batch_size[0]) != 0).nonzero().squeeze(-1) + 1)[:k]
        n = hit.numel()
        h = k - n if self.strategy == "all" else int(torch.randint(0, k - n + 1, (), generator=self.generator))
        cand = torch.ones(achieved.shape[0], dtype=torch.bool)
        cand[0] = False
        cand[hit] = False
        cand = cand.nonzero().squeeze(-1)
        h = min(h, cand.numel())
        if h == 0:
            return None
        alt = cand[torch.randperm(cand.numel(), generator=self.generator)[:h]]
        times = torch.cat([hit, alt])
        chosen = torch.cat([goals0[:n], achieved[alt].to(goals0.dtype)])[torch.argsort(times)]
        new = goals0.clone()
        new[: n + h] = chosen
        return new

    def achieved_sequence(self, trial: TensorDictBase, gshape: torch.Size) -> torch.Tensor:
        """Achieved position at obs index 0..L: ``[L+1, *G]``."""
        seq = torch.cat([trial.get(self.achieved_key)[:1], trial.get(unravel_key(("next", self.achieved_key)))], 0)
        return seq.reshape(seq.shape[0], *gshape)

    def __call__(self, data: TensorDictBase) -> TensorDictBase:
        if self.strategy == "none":
            return data
        if data.batch_dims == 1:
            starts = self.slice_starts(data)
            if starts.numel() == 1:
                return self.relabel_trial(data)
            if self.time_key is None or self.time_key not in data.keys(True):
                raise ValueError(
                    f"HindsightRelabel got a flat batch of {starts.numel()} slices but no {self.time_key!r} to tell "
                    f"which of them start a trial (TorchRL's SliceSampler marks every slice start {self.init_key!r}); "
                    f"store the steps since the hard reset (make_amago_env writes 'time_idx'), or pass one trial")
            bounds = torch.cat([starts, torch.tensor([data.batch_size[0]])]).tolist()
            return self._relabel_batch(data, list(zip(bounds[:-1], bounds[1:])))
        if data.batch_dims == 2:
            T = data.batch_size[1]
            return self._relabel_batch(data.reshape(-1), [(b * T, (b + 1) * T) for b in range(data.batch_size[0])]
                                       ).reshape(data.batch_size)
        raise ValueError(f"HindsightRelabel expects one trial [L], windows [B, T] or a flat batch of slices [N], got "
                         f"batch {tuple(data.batch_size)}")

    def slice_starts(self, flat: TensorDictBase) -> torch.Tensor:
        """Slice starts in a flat batch ``[N]``: 0, ``init_key``, ``time_key`` not counting up, a new trial/traj id."""
        n = flat.batch_size[0]
        new = torch.zeros(n, dtype=torch.bool)
        new[0] = True
        keys = flat.keys(True)
        if self.init_key is not None and self.init_key in keys:
            new |= flat.get(self.init_key).reshape(n).bool()
        if self.time_key is not None and self.time_key in keys:
            t = flat.get(self.time_key).reshape(n)
            new[1:] |= t[1:] != t[:-1] + 1
        for id_key in (K.TRIAL_ID, ("collector", "traj_ids")):
            if id_key in keys:
                ids = flat.get(id_key).reshape(n)
                new[1:] |= ids[1:] != ids[:-1]
        return new.nonzero().squeeze(-1)

    def _starts_trial(self, trial: TensorDictBase) -> bool:
        keys = trial.keys(True)
        if self.time_key is not None and self.time_key in keys:
            return int(trial.get(self.time_key).reshape(-1)[0]) == 0
        if self.init_key is not None and self.init_key in keys:
            return bool(trial.get(self.init_key)[0].all())
        return True

    def _relabel_batch(self, flat: TensorDictBase, spans: list[tuple[int, int]]) -> TensorDictBase:
        """Relabel each ``flat[start:end]`` that starts a trial on its valid prefix; same shape, cut steps masked."""
        keys = flat.keys(True)
        present = [k for k in self.mask_keys if k in keys]
        valid = torch.ones(flat.batch_size[0], dtype=torch.bool)
        for k in present:
            valid &= flat.get(k).reshape(-1).bool()
        out, new_valid = None, valid.clone()
        for start, end in spans:
            n = int(valid[start:end].long().cumprod(0).sum())  # the valid prefix (padding is on the right)
            if n == 0 or not self._starts_trial(flat[start:start + n]):
                continue
            new = self.relabel_trial(flat[start:start + n])
            if out is None:
                out = flat.clone()
            out[start:start + new.batch_size[0]] = new
            new_valid[start + new.batch_size[0]:start + n] = False
        if out is None:
            out = flat.copy()  # shallow: new mask entries only
        for k in present or [K.TORCHRL_MASK]:
            shape = out.get(k).shape if k in present else (flat.batch_size[0],)
            out.set(k, new_valid.reshape(shape))
        return out

    def relabel_trial(self, trial: TensorDictBase) -> TensorDictBase:
        """Relabel one whole trial ``[L]`` (the ``trial_transform`` path; it may come back shorter)."""
        if not self._starts_trial(trial):
            return trial  # not a whole trial (e.g. a snippet): its goals cannot be replayed from the start
        new_goals = self.choose_goals(trial)
        if new_goals is None:
            return trial
        achieved = self.achieved_sequence(trial, new_goals.shape[1:])
        return self.apply(trial, RelabelResult(*self.relabel_fn(achieved, new_goals)))

    def apply(self, trial: TensorDictBase, res: RelabelResult) -> TensorDictBase:
        """Write a :class:`RelabelResult` into the trial (cut after the first terminated step)."""
        length = trial.batch_size[0]
        term = res.terminated.reshape(length)
        cut = bool(term.any())
        if cut:
            length = int(term.nonzero()[0, 0]) + 1
        out = trial[:length].clone()
        goals = out.get(self.goals_key)
        out.set(self.goals_key, res.goals[:length].to(goals.dtype).reshape(goals.shape))
        out.set(unravel_key(("next", self.goals_key)), res.goals[1: length + 1].to(goals.dtype).reshape(goals.shape))
        rew_old = out.get(self.reward_key)
        rew = res.rewards[:length].to(rew_old.dtype).reshape(rew_old.shape)
        out.set(self.reward_key, rew)
        if self.prev_reward_key in out.keys(True):
            prev = out.get(self.prev_reward_key)
            out.set(self.prev_reward_key, torch.cat([prev[:1], rew[:-1].reshape(-1, *prev.shape[1:])], 0))
            nk = unravel_key(("next", self.prev_reward_key))
            if nk in out.keys(True):
                out.set(nk, rew.reshape(out.get(nk).shape).to(out.get(nk).dtype))
        if cut:  # truncated is left as stored: False before the original end, the env's own value at it
            for key in (self.terminated_key, self.done_key):
                if key in out.keys(True):
                    flags = out.get(key).clone()
                    flags[-1] = True
                    out.set(key, flags)
        return out
