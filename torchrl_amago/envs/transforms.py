"""TorchRL transforms giving any env AMAGO's per-step format (docs/api/envs.md); :func:`make_amago_env` stacks them."""
from __future__ import annotations

import warnings

import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.data import Bounded, Categorical, Composite, TensorSpec, Unbounded
from torchrl.envs import (Compose, DoubleToFloat, EnvBase, InitTracker, SerialEnv, StepCounter, Transform,
                          TransformedEnv)
from torchrl.envs.batched_envs import BatchedEnvBase

from .. import keys as K
from ..spaces import ActionSpace, action_space_from_spec

EPISODE_END_KEY = K.EPISODE_END
EPISODE_RETURN_KEY = K.EPISODE_RETURN
EPISODE_COUNT_KEY = K.EPISODE_COUNT
EPISODE_SUCCESS_KEY = K.EPISODE_SUCCESS
SOFT_RESET_KEY = K.SOFT_RESET
#: int64 ``[*, 1]`` index of the task/game an env slot runs (multi-task envs); bookkeeping, never a policy input.
TASK_ID_KEY = K.TASK_ID
#: keys a timestep encoder must not read (bookkeeping, not observations)
BOOKKEEPING_KEYS = (EPISODE_END_KEY, EPISODE_RETURN_KEY, EPISODE_COUNT_KEY, EPISODE_SUCCESS_KEY)


def episode_stats_spec(batch_shape, device=None, success: bool = False) -> dict:
    """Specs of the per-episode bookkeeping keys for an env with batch shape ``batch_shape``."""
    shape = (*batch_shape, 1)
    specs = {EPISODE_END_KEY: Categorical(2, shape, dtype=torch.bool, device=device),
             EPISODE_RETURN_KEY: Unbounded(shape, dtype=torch.float32, device=device),
             EPISODE_COUNT_KEY: Unbounded(shape, dtype=torch.int64, device=device)}
    if success:
        specs[EPISODE_SUCCESS_KEY] = Categorical(2, shape, dtype=torch.bool, device=device)
    return specs


def _reset_mask(tensordict: TensorDictBase | None, batch_shape) -> torch.Tensor | None:
    """The ``"_reset"`` mask reshaped to ``batch_shape`` (None = everything is reset)."""
    m = None if tensordict is None else tensordict.get("_reset", None)
    return None if m is None else m.reshape(batch_shape)


def _bcast(mask: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """View a batch-shaped mask so it broadcasts against ``x`` (batch dims first)."""
    return mask.reshape(*mask.shape, *([1] * (x.ndim - mask.ndim)))


class _EnvOnly:
    """Mixin for env transforms that are not replay-buffer transforms: ``forward`` passes the data through."""

    def forward(self, tensordict):
        return tensordict


class PrevActionReward(_EnvOnly, Transform):
    """Writes ``prev_action`` ``[*, A]`` (one-hot for discrete) and ``prev_reward`` ``[*, 1]`` under ``"next"`` every
    step, zeros on resets. Keys in: ``action``, ``("next", "reward")``. ``action_spec`` None: the parent env's."""

    def __init__(self, action_spec: TensorSpec | ActionSpace | None = None, *, action_key=K.ACTION,
                 reward_key=K.REWARD, prev_action_key=K.PREV_ACTION, prev_reward_key=K.PREV_REWARD):
        super().__init__(in_keys=[action_key, reward_key], out_keys=[prev_action_key, prev_reward_key])
        self.action_key, self.reward_key = action_key, reward_key
        self.prev_action_key, self.prev_reward_key = prev_action_key, prev_reward_key
        self._space = action_spec if isinstance(action_spec, ActionSpace) or action_spec is None \
            else action_space_from_spec(action_spec)

    @property
    def space(self) -> ActionSpace:
        if self._space is None:
            if self.parent is None:
                raise ValueError("PrevActionReward needs an action_spec when it is not inside an env")
            specs = self.parent.full_action_spec
            if self.action_key not in specs.keys(True, True):
                raise ValueError(f"the env has no action key {self.action_key!r} (its action keys: "
                                 f"{list(specs.keys(True, True))}); dict/composite action spaces (e.g. gymnasium "
                                 f"Dict) are not supported: flatten them into one action")
            self._space = action_space_from_spec(specs[self.action_key])
        return self._space

    def _features(self, action: torch.Tensor, batch_shape) -> torch.Tensor:
        sp = self.space
        if sp.discrete and not sp.one_hot:
            idx = action.reshape(batch_shape).long()  # Categorical [*B] (or [*B, 1]) -> one-hot
            return torch.nn.functional.one_hot(idx, sp.dim).float()
        if action.shape[-1] != sp.dim:
            raise ValueError(f"{self.action_key!r} must end in dim {sp.dim} for a {sp.kind} action space, got "
                             f"shape {tuple(action.shape)}")
        return action.float()

    def _step(self, tensordict: TensorDictBase, next_tensordict: TensorDictBase) -> TensorDictBase:
        B = next_tensordict.batch_size
        next_tensordict.set(self.prev_action_key, self._features(tensordict.get(self.action_key), B))
        next_tensordict.set(self.prev_reward_key, next_tensordict.get(self.reward_key).reshape(*B, 1).float())
        return next_tensordict

    def _reset(self, tensordict: TensorDictBase, tensordict_reset: TensorDictBase) -> TensorDictBase:
        B, dev = tensordict_reset.batch_size, tensordict_reset.device
        tensordict_reset.set(self.prev_action_key, torch.zeros(*B, self.space.dim, device=dev))
        tensordict_reset.set(self.prev_reward_key, torch.zeros(*B, 1, device=dev))
        return tensordict_reset

    def transform_observation_spec(self, observation_spec: Composite) -> Composite:
        self._check_later_transforms()  # specs are recomputed after every append / insert, before the next step
        B, dev = observation_spec.shape, observation_spec.device
        observation_spec[self.prev_action_key] = Unbounded((*B, self.space.dim), dtype=torch.float32, device=dev)
        observation_spec[self.prev_reward_key] = Unbounded((*B, 1), dtype=torch.float32, device=dev)
        return observation_spec

    def _check_later_transforms(self) -> None:
        """A ValueError for a transform after this one that writes the reward (``prev_reward`` would not be it) or
        maps the action on its way to the env (``prev_action`` would be the env's action, not the policy's)."""
        compose = getattr(self.container, "transform", self.container)
        if not isinstance(compose, Compose):
            return
        later, seen = [], False
        for t in _flat_transforms(compose):
            later += [t] if seen else []
            seen = seen or t is self
        for t in later:
            if self.reward_key in (getattr(t, "out_keys", None) or []):
                raise ValueError(
                    f"{type(t).__name__} writes {self.reward_key!r} after make_amago_env's transforms, so the policy's "
                    f"{self.prev_reward_key!r} would not be the reward it is trained on: apply it to the env given to "
                    f"make_amago_env, or put it first with env.insert_transform(0, transform)")
            if self.action_key in (getattr(t, "in_keys_inv", None) or []):
                raise ValueError(
                    f"{type(t).__name__} maps {self.action_key!r} after make_amago_env's transforms, so the policy's "
                    f"{self.prev_action_key!r} would be the env's action, not the one it chose: apply it to the env "
                    f"given to make_amago_env, make_amago_env(TransformedEnv(env, transform))")


def _flat_transforms(compose: Compose) -> list[Transform]:
    """The transforms of ``compose`` in order, nested ``Compose``s flattened."""
    return [u for t in compose for u in (_flat_transforms(t) if isinstance(t, Compose) else [t])]


class ActionCounts(_EnvOnly, Transform):
    """Writes ``action_counts`` ``[*, A]`` float: the running sum of ``prev_action`` since the hard reset (an
    observation). Key in: ``("next", "prev_action")``. Place it after :class:`PrevActionReward`."""

    def __init__(self, *, prev_action_key=K.PREV_ACTION, counts_key=K.ACTION_COUNTS):
        super().__init__(in_keys=[prev_action_key], out_keys=[counts_key])
        self.prev_action_key, self.counts_key = prev_action_key, counts_key

    def check(self) -> None:
        """Raise ValueError, named, unless a PrevActionReward of a discrete action space comes before."""
        self._prev_action_transform()

    def _prev_action_transform(self) -> PrevActionReward:
        transforms = self.parent.transform if self.parent is not None else None
        found = [t for t in (transforms if isinstance(transforms, Compose) else [transforms])
                 if isinstance(t, PrevActionReward)]
        if not found:
            raise ValueError("ActionCounts reads 'prev_action': place it after PrevActionReward in the same Compose "
                             "(make_amago_env(action_counts=True) does)")
        if not found[0].space.discrete:
            raise ValueError(f"ActionCounts counts discrete actions; this env's action space is "
                             f"{found[0].space.kind!r}")
        return found[0]

    def _step(self, tensordict: TensorDictBase, next_tensordict: TensorDictBase) -> TensorDictBase:
        prev, counts = next_tensordict.get(self.prev_action_key), tensordict.get(self.counts_key, None)
        next_tensordict.set(self.counts_key, prev if counts is None else counts + prev)
        return next_tensordict

    def _reset(self, tensordict: TensorDictBase, tensordict_reset: TensorDictBase) -> TensorDictBase:
        B, dev = tensordict_reset.batch_size, tensordict_reset.device
        zeros = torch.zeros(*B, tensordict_reset.get(self.prev_action_key).shape[-1], device=dev)
        mask = _reset_mask(tensordict, B)
        counts = None if tensordict is None else tensordict.get(self.counts_key, None)
        if mask is not None and counts is not None:
            zeros = torch.where(_bcast(mask, zeros), zeros, counts.reshape(zeros.shape))
        tensordict_reset.set(self.counts_key, zeros)
        return tensordict_reset

    def transform_observation_spec(self, observation_spec: Composite) -> Composite:
        dim = self._prev_action_transform().space.dim
        B, dev = observation_spec.shape, observation_spec.device
        observation_spec[self.counts_key] = Unbounded((*B, dim), dtype=torch.float32, device=dev)
        return observation_spec


def add_action_counts(env: EnvBase) -> TransformedEnv:
    """``env`` (made by :func:`make_amago_env`, possibly with more transforms) with :class:`ActionCounts` last."""
    if not isinstance(env, TransformedEnv):
        raise ValueError(f"add_action_counts needs an env from make_amago_env (a TransformedEnv with "
                         f"PrevActionReward), got {type(env).__name__}")
    counts = ActionCounts()
    env.append_transform(counts)
    counts.check()
    return env


class EpisodeTime(_EnvOnly, StepCounter):
    """TorchRL's ``StepCounter`` writing the ``time_idx`` key (+1 per step); truncates the trial at ``max_steps``."""

    def __init__(self, max_steps: int | None = None, *, time_key=K.TIME_IDX):
        if max_steps is not None and max_steps < 1:
            raise ValueError(f"max_steps must be >= 1 or None, got {max_steps}")
        super().__init__(max_steps=max_steps, step_count_key=time_key)
        self.time_key = time_key


def _base_env(env: EnvBase) -> EnvBase:
    while isinstance(env, TransformedEnv):
        env = env.base_env
    return env


def keeps_task_on_soft_reset(env: EnvBase) -> bool | None:
    """Whether ``env``'s base env(s) declare ``supports_soft_reset``; ``None`` when it cannot be told."""
    base = _base_env(env)
    if getattr(base, "supports_soft_reset", False):
        return True
    if isinstance(base, SerialEnv):
        subs = getattr(base, "_envs", None)
        return all(keeps_task_on_soft_reset(e) for e in subs) if subs else None
    return None if isinstance(base, BatchedEnvBase) else False


class MetaTrial(_EnvOnly, Transform):
    """Runs ``k_episodes`` inner episodes (or ``horizon`` steps) of the parent env as one trial, soft-resetting it in
    between (``reset_mode`` ``"same_step"`` or ``"dummy_step"``; ``same_task``: docs/api/envs.md). Keys in:
    ``done``, ``terminated``, ``reward``; out: ``soft_reset`` ``[*, 1]`` float and the ``episode_*`` keys."""

    def __init__(self, k_episodes: int | None = None, horizon: int | None = None, reset_mode: str = "same_step",
                 max_episode_steps: int | None = None, *, same_task: bool | None = None,
                 soft_reset_key: str = SOFT_RESET_KEY, reward_key=K.REWARD):
        if k_episodes is None and horizon is None:
            raise ValueError("MetaTrial needs k_episodes or horizon (or both)")
        for name, v in (("k_episodes", k_episodes), ("horizon", horizon), ("max_episode_steps", max_episode_steps)):
            if v is not None and (not isinstance(v, int) or v < 1):
                raise ValueError(f"{name} must be a positive int or None, got {v!r}")
        if reset_mode not in ("same_step", "dummy_step"):
            raise ValueError(f"reset_mode must be 'same_step' or 'dummy_step', got {reset_mode!r}")
        if same_task not in (None, True, False):
            raise ValueError(f"same_task must be None, True or False, got {same_task!r}")
        self._soft_kwargs: dict | None = None  # decided at the first reset, when the parent env is known
        super().__init__(in_keys=[], out_keys=[soft_reset_key, *BOOKKEEPING_KEYS[:3]])
        self.k_episodes, self.horizon, self.reset_mode = k_episodes, horizon, reset_mode
        self.max_episode_steps, self.same_task = max_episode_steps, same_task
        self.soft_reset_key, self.reward_key = soft_reset_key, reward_key
        self._st, self._obs_keys = None, None  # per-slot trial state (set at reset); observation keys

    def _write_obs(self, td: TensorDictBase, soft, end, ret, count):
        B = td.batch_size
        for k, v in ((self.soft_reset_key, soft.float()), (EPISODE_END_KEY, end.clone()),
                     (EPISODE_RETURN_KEY, ret.float()), (EPISODE_COUNT_KEY, count.clone())):
            td.set(k, v.reshape(*B, 1))

    def _soft_reset_kwargs(self) -> dict:
        keeps = keeps_task_on_soft_reset(self.parent)
        if self.same_task is False:
            return {}
        if keeps or (keeps is None and self.same_task):
            return {"soft_reset": True}
        name = type(_base_env(self.parent)).__name__
        fixes = ("for a Gymnasium env use torchrl_amago.envs.libs.SameTaskGymEnv (it replays the trial's reset seed "
                 "at each soft reset), or give the env a soft reset: supports_soft_reset = True and a _reset(..., "
                 "soft_reset=False) that keeps the task when soft_reset is True (docs/api/envs.md)")
        if self.same_task:
            raise ValueError(f"MetaTrial(same_task=True): {name} has no soft reset (supports_soft_reset), so it cannot "
                             f"keep its task across the trial's episodes; {fixes}")
        warnings.warn(f"MetaTrial: {name} has no soft reset{' that can be seen from here' if keeps is None else ''} "
                      f"(supports_soft_reset), so every inner episode is an ordinary reset, which redraws whatever its "
                      f"reset draws (a Gymnasium env: its task). To keep the task for the whole trial, {fixes}; pass "
                      f"MetaTrial(same_task=False) (make_amago_env(same_task=False)) if each episode should get a new "
                      f"task.", UserWarning, stacklevel=2)
        return {}

    def _reset(self, tensordict: TensorDictBase, tensordict_reset: TensorDictBase) -> TensorDictBase:
        if self._soft_kwargs is None:
            self._soft_kwargs = self._soft_reset_kwargs()
        B, dev = tensordict_reset.batch_size, tensordict_reset.device
        mask = _reset_mask(tensordict, B)
        if self._st is None or self._st["t"].shape != B or mask is None:
            z = torch.zeros(B, dtype=torch.int64, device=dev)
            self._st = dict(count=z, t=z.clone(), ep_steps=z.clone(), ep_ret=torch.zeros(B, device=dev),
                            pending=torch.zeros(B, dtype=torch.bool, device=dev))
        else:
            for k, v in self._st.items():
                self._st[k] = torch.where(mask, torch.zeros_like(v), v)
        zeros = torch.zeros(B, dtype=torch.int64, device=dev)
        self._write_obs(tensordict_reset, torch.ones(B, device=dev), zeros.bool(), zeros.float(), zeros)
        return tensordict_reset

    def _soft_reset_parent(self, mask: torch.Tensor, next_td: TensorDictBase) -> TensorDictBase:
        B = next_td.batch_size
        td = TensorDict({"_reset": mask.reshape(*B, 1)}, batch_size=B, device=next_td.device)
        for k in ("done", "terminated", "truncated"):
            if k in next_td.keys():
                td.set(k, next_td.get(k).clone())
        return self.parent.reset(td, **self._soft_kwargs)

    def _step(self, tensordict: TensorDictBase, next_tensordict: TensorDictBase) -> TensorDictBase:
        B, dev = next_tensordict.batch_size, next_tensordict.device
        if self._st is None or self._st["t"].shape != B:
            raise RuntimeError("MetaTrial: step called before reset")
        st = self._st
        if self._obs_keys is None:
            self._obs_keys = [k for k in self.parent.full_observation_spec.keys(True, True)
                              if k not in BOOKKEEPING_KEYS]
        inner_done = next_tensordict.get("done").reshape(B)
        inner_term = next_tensordict.get("terminated", next_tensordict.get("done")).reshape(B)
        reward = next_tensordict.get(self.reward_key)
        pend = st["pending"]
        t = st["t"] + 1
        ep_steps = torch.where(pend, 0, st["ep_steps"] + 1)
        if self.max_episode_steps is not None:
            inner_done = inner_done | (ep_steps >= self.max_episode_steps)
        ep_end = inner_done & ~pend
        r = torch.where(_bcast(pend, reward), torch.zeros_like(reward), reward)
        ep_ret = st["ep_ret"] + r.reshape(B).float()
        count = st["count"] + ep_end.long()
        trial_end = torch.zeros(B, dtype=torch.bool, device=dev)
        if self.k_episodes is not None:
            trial_end = trial_end | (count >= self.k_episodes)
        if self.horizon is not None:
            trial_end = trial_end | (t >= self.horizon)
        new_ep = ep_end & ~trial_end
        if self.reset_mode == "same_step":
            show_start, reset_now, next_pending = new_ep, new_ep, torch.zeros_like(pend)
        else:
            show_start, reset_now, next_pending = pend, new_ep | pend, new_ep
            next_tensordict.set(self.reward_key, r)
        if reset_now.any():
            td_r = self._soft_reset_parent(reset_now, next_tensordict)
            for k in self._obs_keys:
                if k in td_r.keys(True, True) and k in next_tensordict.keys(True, True):
                    v = next_tensordict.get(k)
                    next_tensordict.set(k, torch.where(_bcast(show_start, v), td_r.get(k).to(v.dtype), v))
        terminated = trial_end & ep_end & inner_term
        for k, v in (("done", trial_end), ("terminated", terminated), ("truncated", trial_end & ~terminated)):
            next_tensordict.set(k, v.reshape(*B, 1))
        self._write_obs(next_tensordict, show_start, ep_end, torch.where(ep_end, ep_ret, 0.0), count)
        st["t"], st["count"], st["pending"] = t, count, next_pending
        st["ep_steps"] = torch.where(ep_end, 0, ep_steps)
        st["ep_ret"] = torch.where(ep_end, 0.0, ep_ret)
        return next_tensordict

    def transform_observation_spec(self, observation_spec: Composite) -> Composite:
        B, dev = observation_spec.shape, observation_spec.device
        observation_spec[self.soft_reset_key] = Bounded(0.0, 1.0, (*B, 1), dtype=torch.float32, device=dev)
        for k, s in episode_stats_spec(B, dev).items():
            observation_spec[k] = s
        return observation_spec

    def transform_done_spec(self, done_spec: Composite) -> Composite:
        B, dev = done_spec.shape, done_spec.device
        for k in ("done", "terminated", "truncated"):
            if k not in done_spec.keys():
                done_spec[k] = Categorical(2, (*B, 1), dtype=torch.bool, device=dev)
        return done_spec


def make_amago_env(env: EnvBase, *, k_episodes: int | None = None, horizon: int | None = None,
                   reset_mode: str = "same_step", max_episode_steps: int | None = None,
                   max_steps: int | None = None, action_spec: TensorSpec | ActionSpace | None = None,
                   same_task: bool | None = None, action_counts: bool = False) -> TransformedEnv:
    """Wrap any TorchRL env into AMAGO's per-step format: [``DoubleToFloat``] → [``MetaTrial``] → ``InitTracker`` →
    ``PrevActionReward`` → [``ActionCounts``] → ``EpisodeTime(max_steps)`` (docs/api/envs.md)."""
    ts = []
    specs = (getattr(env, f"full_{k}_spec") for k in ("observation", "reward", "action"))
    if any(getattr(s, "dtype", None) == torch.float64 for spec in specs for s in spec.values(True, True)):
        ts.append(DoubleToFloat())
    if k_episodes is not None or horizon is not None:
        ts.append(MetaTrial(k_episodes=k_episodes, horizon=horizon, reset_mode=reset_mode,
                            max_episode_steps=max_episode_steps, same_task=same_task))
    elif max_episode_steps is not None:
        max_steps = max_episode_steps if max_steps is None else min(max_steps, max_episode_steps)
    counts = [ActionCounts()] if action_counts else []
    ts += [InitTracker(), PrevActionReward(action_spec), *counts, EpisodeTime(max_steps)]
    # auto_unwrap=False: PrevActionReward must see the policy's action, before any inner action transform
    out = TransformedEnv(env, Compose(*ts), auto_unwrap=False)
    if action_spec is None:
        next(t for t in ts if isinstance(t, PrevActionReward)).space  # unsupported action spaces fail here, named
    for t in counts:
        t.check()  # a continuous action space fails here, named
    return out
