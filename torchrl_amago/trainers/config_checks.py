"""Range checks of `TrainConfig` flags that a bad value would otherwise turn into a silent or deep failure
(called from `TrainConfig.validate`; every message names the flag)."""
from __future__ import annotations

import math

NONFINITE_DATA = ("error", "drop")


def check_ranges(cfg) -> None:
    for name in ("learning_rate", "grad_clip", "tau", "target_backbone_tau", "l2_coeff", "reward_multiplier",
                 "critic_loss_weight", "dropout", "eps_start", "eps_end", "gamma", "target_backbone_min_gamma",
                 "lr_final_ratio"):
        v = getattr(cfg, name)
        if not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"--{name} must be a finite number, got {v!r}")
    if cfg.grad_clip <= 0:
        raise ValueError(f"--grad_clip must be > 0 (the max gradient norm; a negative value flips the gradient), "
                         f"got {cfg.grad_clip}")
    for name in ("tau", "target_backbone_tau"):
        if not 0 < getattr(cfg, name) <= 1:
            raise ValueError(f"--{name} must be in (0, 1] (target = (1 - tau) * target + tau * online), got "
                             f"{getattr(cfg, name)}")
    if cfg.learning_rate <= 0:
        raise ValueError(f"--learning_rate must be > 0, got {cfg.learning_rate}")
    for name in ("l2_coeff", "critic_loss_weight", "entropy_coeff", "start_learning_at_epoch",
                 "start_collecting_at_epoch"):
        if getattr(cfg, name) < 0:
            raise ValueError(f"--{name} must be >= 0, got {getattr(cfg, name)}")
    if cfg.reward_multiplier <= 0:
        raise ValueError(f"--reward_multiplier must be > 0, got {cfg.reward_multiplier}")
    for name in ("dropout", "target_backbone_min_gamma"):
        if not 0 <= getattr(cfg, name) < 1:
            raise ValueError(f"--{name} must be in [0, 1), got {getattr(cfg, name)}")
    for name in ("eps_start", "eps_end", "lr_final_ratio"):
        if not 0 <= getattr(cfg, name) <= 1:
            raise ValueError(f"--{name} must be in [0, 1], got {getattr(cfg, name)}")
    if cfg.grads_per_epoch > 0 and cfg.start_learning_at_epoch >= cfg.epochs:
        raise ValueError(f"--start_learning_at_epoch={cfg.start_learning_at_epoch} is not below --epochs={cfg.epochs}: "
                         f"the run would make no gradient step")
    per_epoch = cfg.parallel_envs * cfg.timesteps_per_epoch
    if per_epoch > cfg.dset_max_size:
        raise ValueError(f"--dset_max_size={cfg.dset_max_size} is smaller than one epoch of collection "
                         f"(--parallel_envs x --timesteps_per_epoch = {per_epoch} steps)")
    if cfg.traj_save_len is not None and cfg.traj_save_len > cfg.dset_max_size:
        raise ValueError(f"--traj_save_len={cfg.traj_save_len} exceeds --dset_max_size={cfg.dset_max_size}")
    if cfg.min_trials_to_learn < 1:
        raise ValueError(f"--min_trials_to_learn must be >= 1, got {cfg.min_trials_to_learn}")
    if cfg.max_nonfinite_updates < 1:
        raise ValueError(f"--max_nonfinite_updates must be >= 1, got {cfg.max_nonfinite_updates}")
    if cfg.collector_batch_steps is not None and cfg.collector_batch_steps < 1:
        raise ValueError(f"--collector_batch_steps must be >= 1 (or unset), got {cfg.collector_batch_steps}")
    if cfg.replay_ratio is not None and not (math.isfinite(cfg.replay_ratio) and cfg.replay_ratio > 0):
        raise ValueError(f"--replay_ratio must be a number > 0 (updates per stored env step) or unset, got "
                         f"{cfg.replay_ratio}")
    if not cfg.collector_timeout_s > 0:
        raise ValueError(f"--collector_timeout_s must be > 0, got {cfg.collector_timeout_s}")
    if cfg.nonfinite_data not in NONFINITE_DATA:
        raise ValueError(f"--nonfinite_data={cfg.nonfinite_data!r} is not one of {list(NONFINITE_DATA)}")


def check_trial_fits(cfg, trial_len: int | None) -> None:
    """A trial longer than the replay can never be stored whole, so learning would never start."""
    if trial_len is not None and cfg.traj_save_len is None and trial_len > cfg.dset_max_size:
        raise ValueError(f"--dset_max_size={cfg.dset_max_size} is smaller than one trial ({trial_len} steps): no "
                         f"trial would ever be stored whole; raise --dset_max_size or set --traj_save_len")
