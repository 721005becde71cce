"""Which settings may change on resume (:data:`SAFE_ON_RESUME`); any other change is refused by name."""
from __future__ import annotations

from ..config import TrainConfig, field_default, gammas_of

SAFE_ON_RESUME = frozenset({
    # length / cadence of the loop
    "epochs", "timesteps_per_epoch", "grads_per_epoch", "start_learning_at_epoch", "start_collecting_at_epoch",
    "eval_interval", "eval_timesteps", "eval_envs", "ckpt_interval", "final_eval", "min_trials_to_learn",
    "sample_actions_train", "sample_actions_eval",
    # optimisation from now on (learning rate and weight decay are written into the loaded optimizer)
    "learning_rate", "l2_coeff", "lr_warmup_steps", "lr_decay", "grad_clip", "tau", "batch_size", "mixed_precision",
    "compile_loss", "cuda_graph",
    # how env data is collected from now on (open trials are closed at every resume; epsilon goes on from the
    # exploration's step count with the schedule given now)
    "eps_start", "eps_end", "eps_steps_anneal", "collect", "num_collectors", "policy_sync_interval", "replay_ratio", "timeout_s", "collector_address",
    # how windows are drawn from the (unchanged) replay
    "padded_sampling", "trim_windows",
    # guards, io, hardware
    "nonfinite_data", "device", "num_threads", "seed", "progress_bar", "logger", "eval_only",
})
RUN_IDENTITY = frozenset({"run_name", "buffer_dir"})


def _norm(v):
    if isinstance(v, (list, tuple)):
        return [_norm(x) for x in v]
    return v


def _as_flag(name: str, value) -> str:
    """`value` of `--name` as typed on a command line (the config field `name=value` from Python)."""
    if isinstance(value, bool):
        return f"--{name}" if value else f"--no-{name}"
    if value is None:
        return f"{name}=None"
    shown = " ".join(map(str, value)) if isinstance(value, (list, tuple)) else value
    return f"--{name} {shown}"


def config_changes(stored: dict, new: dict) -> dict[str, tuple]:
    """``{flag: (stored value, new value)}`` for every flag that differs (a missing one counts as its default)."""
    changes = {}
    for name, value in new.items():
        if name in RUN_IDENTITY or name not in TrainConfig.__dataclass_fields__:
            continue
        old = stored[name] if name in stored else field_default(name)
        if _norm(old) != _norm(value):
            changes[name] = (old, value)
    return changes


#: An older checkpoint's settings: `cql_resolved` held the conservative term as its run used it; retired flags.
_OLD_CQL = "cql_resolved"
_OLD_DEFAULTS = {"target_backbone_all_gammas": True, "n_step_stop_explored": False, "n_step_min_gamma": 0.0,
                 "tree_backup": False, "actor_encoder_grad": "all", "critic_loss_weight": 10.0, "num_critics_td": 2,
                 "popart_beta": 5e-4, "popart_init_nu": 100.0, "popart_min_sigma": 1e-4, "popart_min_sigma_ratio": 0.1,
                 "num_actions_for_value_in_critic_loss": 1, "use_target_actor": True, "gumbel_temperature": 0.5,
                 "fbc_filter_kwargs": None, "sampling": "trial"}


def current_config(ckpt: dict, path: str) -> dict:
    """The checkpoint's config in today's flags (a retired flag set otherwise than today is refused)."""
    stored = dict(ckpt["config"])
    if _OLD_CQL in ckpt:
        used = ckpt[_OLD_CQL]
        if not isinstance(used, dict) or not set(used) <= {"cql_coeff", "cql_ramp"}:
            raise ValueError(f"checkpoint {path}: {_OLD_CQL!r} must map cql_coeff / cql_ramp, got {used!r}")
        stored.update(used)
        ramp = stored.get("cql_ramp")
        stored["cql_ramp"] = None if ramp is None or ramp[1] <= 0 else ramp
    if "target_backbone" in stored:
        gammas = gammas_of(stored.get("multigammas"), stored.get("gamma", field_default("gamma")))
        stored["target_encoders"] = bool(stored.pop("target_backbone")) and max(gammas) >= stored.pop(
            "target_backbone_min_gamma", 0.9999)
    if "two_hot_min_return" in stored:
        stored["two_hot_range"] = [stored.pop("two_hot_min_return"), stored.pop("two_hot_max_return", 1e5)]
    kept = {name: (stored[name], value) for name, value in _OLD_DEFAULTS.items()
            if name in stored and _norm(stored[name]) != _norm(value)}
    if kept:
        lines = "\n  ".join(f"--{k}: {old!r} (only {now!r} remains)" for k, (old, now) in sorted(kept.items()))
        raise ValueError(f"checkpoint {path} was made with settings that were retired:\n  {lines}\n"
                         f"start a new run (another --run_name)")
    return {k: v for k, v in stored.items() if k in TrainConfig.__dataclass_fields__ or k in RUN_IDENTITY}


def check_resume_config(stored: dict, new: dict, path: str) -> dict[str, tuple]:
    """Return the safe changes; raise ValueError listing every change that cannot be applied on resume."""
    changes = config_changes(stored, new)
    refused = {k: v for k, v in changes.items() if k not in SAFE_ON_RESUME}
    if refused:
        lines = "\n  ".join(f"--{k}: checkpoint {old!r} -> now {now!r} (the run's value: {_as_flag(k, old)})"
                            for k, (old, now) in sorted(refused.items()))
        raise ValueError(f"checkpoint {path} was made with other settings that cannot change on resume:\n  {lines}\n"
                         f"use the run's values (an example's command takes every flag you do not type from the run's "
                         f"config.json), or start a new run (another --run_name). Settings that may change on resume: "
                         f"{sorted(SAFE_ON_RESUME)}")
    return changes


def extension_note(stored: dict, cfg, planned_updates: int) -> str | None:
    """When a resumed run was started with fewer `epochs` than `cfg` asks for: which schedules end before the new end
    (epsilon after `eps_steps_anneal` batched steps; the learning-rate decay and the conservative ramp after the
    updates they were planned over) and the flag that stretches epsilon; None when none does."""
    before = stored.get("epochs")
    if not isinstance(before, int) or cfg.epochs <= before:
        return None
    ends = []
    if cfg.exploration != "none" and cfg.eps_steps_anneal < cfg.epochs * cfg.timesteps_per_epoch:
        ends.append(f"epsilon reaches --eps_end after --eps_steps_anneal {cfg.eps_steps_anneal} batched steps "
                    f"(epoch {-(-cfg.eps_steps_anneal // max(1, cfg.timesteps_per_epoch))})")
    total = max(0, cfg.epochs - cfg.start_learning_at_epoch) * cfg.grads_per_epoch
    shaped = [f for f, on in (("--lr_decay", cfg.lr_decay != "none"), ("--cql_ramp", cfg.cql_ramp is not None)) if on]
    if shaped and planned_updates < total:
        ends.append(f"{' and '.join(shaped)} end at update {planned_updates} (of {total})")
    if not ends:
        return None
    return (f"this run was started for {before} epochs and now goes on to {cfg.epochs}: " + "; ".join(ends) +
            ". Type --eps_steps_anneal N to anneal epsilon over N steps from here on (a changed --lr_decay or "
            "--lr_warmup_steps plans the learning-rate schedule over the new length)")
