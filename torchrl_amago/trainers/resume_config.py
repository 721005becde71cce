"""Honest resume: compare the checkpoint's config with the new one; apply safe changes, refuse the rest.

A resumed run keeps the checkpoint's weights, optimizer state, replay and counters. Settings that only steer
the loop from now on may change, and the new values are used and recorded in the next checkpoint:
:data:`SAFE_ON_RESUME`. Everything else (model shape, loss and return settings, gammas, replay layout,
exploration schedule, env layout) would silently mix two runs, so a change there is refused with one
message listing every refused flag. ``run_name`` / ``buffer_dir`` locate the run and are never compared.
"""
from __future__ import annotations

import dataclasses
from types import SimpleNamespace

from .config import TrainConfig, gammas_of
from .cql_schedule import cql_coeff_of, cql_ramp_of

SAFE_ON_RESUME = frozenset({
    # length / cadence of the loop
    "epochs", "timesteps_per_epoch", "grads_per_epoch", "start_learning_at_epoch", "start_collecting_at_epoch",
    "eval_interval", "eval_timesteps", "eval_envs", "ckpt_interval", "keep_best", "own_eval_rng",
    "final_eval", "branch_every", "min_trials_to_learn",
    "sample_actions_train", "sample_actions_eval",
    # optimisation from now on (learning rate and weight decay are written into the loaded optimizer)
    "learning_rate", "l2_coeff", "lr_warmup_steps", "lr_decay", "lr_final_ratio", "grad_clip", "tau",
    "target_backbone_tau", "batch_size", "mixed_precision", "compile_loss", "cuda_graph",
    # how env data is collected from now on (open trials are closed at every resume)
    "collect", "num_collectors", "collector_batch_steps", "policy_sync_interval", "replay_ratio",
    "collector_timeout_s", "collector_address",
    # initialisation only: the checkpoint's weights replace it
    "critic_zero_init",
    # how windows are drawn from the (unchanged) replay
    "sampling", "padded_sampling", "trim_windows", "pack_windows",
    # where a branched run started (trainers/branching.py)
    "branch_from",
    # guards, io, hardware
    "max_nonfinite_updates", "nonfinite_data", "device", "dist_timeout_s", "num_threads", "seed", "progress_bar", "log_to_wandb",
    "wandb_project",
})
RUN_IDENTITY = frozenset({"run_name", "buffer_dir"})


def _norm(v):
    if isinstance(v, (list, tuple)):
        return [_norm(x) for x in v]
    return v


def config_changes(stored: dict, new: dict) -> dict[str, tuple]:
    """``{flag: (stored value, new value)}`` for every flag that differs (a flag missing from an older
    checkpoint counts as its default)."""
    defaults = TrainConfig.__dataclass_fields__
    changes = {}
    for name, value in new.items():
        if name in RUN_IDENTITY:
            continue
        if name in stored:
            old = stored[name]
        elif name in defaults:
            f = defaults[name]
            old = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        else:
            continue
        if _norm(old) != _norm(value):
            changes[name] = (old, value)
    return changes


#: Checkpoint entry: `{"cql_coeff", "cql_ramp"}` as the run resolved them (`resolved_cql`), saved beside its flags.
CQL_RESOLVED = "cql_resolved"


def resolved_cql(config: dict, per_action_critic: bool) -> dict:
    """`{"cql_coeff", "cql_ramp"}` as a run with these flags uses them (`cql_schedule`: an unset flag is its default
    for the run's discounts and critic; the ramp of a term that is off is None)."""
    defaults = TrainConfig()
    gammas = gammas_of(config.get("multigammas", defaults.multigammas), config.get("gamma", defaults.gamma))
    flags = SimpleNamespace(cql_coeff=config.get("cql_coeff"), cql_ramp=config.get("cql_ramp"))
    coeff = cql_coeff_of(flags, gammas, per_action_critic)
    return {"cql_coeff": coeff, "cql_ramp": list(cql_ramp_of(flags, coeff)) if coeff > 0 else None}


def with_resolved_cql(config: dict, per_action_critic: bool) -> dict:
    """`config` with `resolved_cql`'s values, so `--cql_coeff 0` resumes a run that left the flag unset where it
    resolved to 0."""
    return {**config, **resolved_cql(config, per_action_critic)}


def check_resume_config(stored: dict, new: dict, path: str) -> dict[str, tuple]:
    """Return the safe changes; raise ValueError listing every change that cannot be applied on resume."""
    changes = config_changes(stored, new)
    refused = {k: v for k, v in changes.items() if k not in SAFE_ON_RESUME}
    if refused:
        lines = "\n  ".join(f"--{k}: checkpoint {old!r} -> now {now!r}" for k, (old, now) in sorted(refused.items()))
        raise ValueError(f"checkpoint {path} was made with other settings that cannot change on resume:\n  {lines}\n"
                         f"use the checkpoint's values, or start a new run (another --run_name). Settings that may "
                         f"change on resume: {sorted(SAFE_ON_RESUME)}")
    return changes


def apply_optimizer_settings(optimizer, scheduler, learning_rate: float, weight_decay: float) -> None:
    """Write the current learning rate / weight decay into a loaded optimizer and LambdaLR schedule (the
    loaded state carries the old run's values)."""
    scheduler.base_lrs = [learning_rate for _ in optimizer.param_groups]
    for group, lam in zip(optimizer.param_groups, scheduler.lr_lambdas):
        group["initial_lr"] = learning_rate
        group["weight_decay"] = weight_decay
        group["lr"] = learning_rate * lam(scheduler.last_epoch)  # a float: --cuda_graph makes its tensor later
        if "capturable" in group:  # a --cuda_graph checkpoint: eager from here on (made capturable again if asked)
            group["capturable"] = False
    scheduler._last_lr = [g["lr"] for g in optimizer.param_groups]
