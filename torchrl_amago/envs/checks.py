"""`check_amago_env`: TorchRL's `check_env_specs` plus AMAGO's per-step alignment on a real `Collector` batch."""
from __future__ import annotations

import torch
from tensordict import TensorDictBase
from torchrl.collectors import Collector
from torchrl.envs import EnvBase
from torchrl.envs.utils import check_env_specs

from ..spaces import action_space_from_spec


#: The per-step keys `make_amago_env` adds (docs/api/envs.md, "Key layout").
AMAGO_STEP_KEYS = ("prev_action", "prev_reward", "time_idx", "is_init")


def require_amago_keys(env: EnvBase, what: str = "env") -> None:
    """A ValueError naming `make_amago_env` when `env`'s observation spec lacks AMAGO's per-step keys."""
    have = set(env.observation_spec.keys(True, True))
    missing = [k for k in AMAGO_STEP_KEYS if k not in have]
    if missing:
        raise ValueError(f"the {what} ({type(env).__name__}) has no {missing} in its observation spec: wrap it with "
                         f"torchrl_amago.envs.make_amago_env(env), which adds AMAGO's per-step keys "
                         f"{list(AMAGO_STEP_KEYS)}")


def spec_shapes(observation_spec) -> dict[str, list[int]]:
    """``{key: per-env shape}`` of an observation spec's leaves (nested keys joined by "/"), batch dims left out."""
    batch = len(observation_spec.shape)
    return {"/".join(k) if isinstance(k, tuple) else k: list(v.shape[batch:])
            for k, v in observation_spec.items(include_nested=True, leaves_only=True)}


def require_spec_shapes(env: EnvBase, expected: dict[str, list[int]], what: str) -> None:
    """A ValueError naming every observation key of `env` missing, extra or of another shape than `expected`
    (a `spec_shapes` of the env an agent was trained on)."""
    have = spec_shapes(env.observation_spec)
    diff = [f"{k}: trained on {expected.get(k)}, this env {have.get(k)}" for k in sorted(set(have) | set(expected))
            if have.get(k) != expected.get(k)]
    if diff:
        raise ValueError(f"this env's observations are not the ones {what} was trained on (key: shape per env): "
                         + "; ".join(diff) + " - wrap and configure the env as the run's was (make_amago_env with "
                         "the same k_episodes, horizon, action_counts, ...)")


def collect_batch(env: EnvBase, frames: int, policy=None, seed: int = 0) -> TensorDictBase:
    """One `Collector` batch of `frames` steps from `env` (random actions without a policy), shaped [N, T]."""
    torch.manual_seed(seed)
    c = Collector(env, policy, frames_per_batch=frames, total_frames=frames)
    try:
        d = next(iter(c))
    finally:
        c.shutdown()
    return d if d.ndim == 2 else d.unsqueeze(0)


def check_alignment(data: TensorDictBase, action_spec) -> None:
    """Assert AMAGO's per-step contract (docs/api/envs.md, "Key layout") on collected data [N, T]."""
    d = data
    space = action_space_from_spec(action_spec)
    a = d["action"]
    feats = torch.nn.functional.one_hot(a.long(), space.dim).float() if space.discrete and not space.one_hot \
        else a.float()
    assert torch.equal(d["next", "prev_action"], feats), "next/prev_action is not the action taken"
    assert torch.equal(d["next", "prev_reward"], d["next", "reward"].float()), "next/prev_reward is not the reward"
    init = d["is_init"].squeeze(-1)
    assert init[:, 0].all(), "the first step of a batch is not marked is_init"
    assert (d["prev_action"][init] == 0).all() and (d["prev_reward"][init] == 0).all(), \
        "prev_action/prev_reward are not zero after a hard reset"
    assert (d["time_idx"][init] == 0).all(), "time_idx does not restart at a hard reset"
    # within a trial the root of t+1 is the "next" of t; across a done the root is a fresh reset
    cont = ~d["next", "done"].squeeze(-1)[:, :-1]
    assert torch.equal(init[:, 1:], ~cont), "is_init does not follow done"
    for k in ("prev_action", "prev_reward", "time_idx"):
        assert torch.equal(d[k][:, 1:][cont], d["next", k][:, :-1][cont]), f"{k} at t+1 is not next/{k} at t"
    assert torch.equal(d["next", "time_idx"], d["time_idx"] + 1), "time_idx does not count up by one"


def check_amago_env(env: EnvBase, steps_per_env: int = 30, policy=None) -> TensorDictBase:
    """`require_amago_keys`, `check_env_specs(env)`, then `check_alignment` on `steps_per_env` steps per env;
    returns the data."""
    require_amago_keys(env, "env given to check_amago_env")
    check_env_specs(env)
    data = collect_batch(env, steps_per_env * max(env.batch_size.numel(), 1), policy)
    check_alignment(data, env.action_spec)
    return data
