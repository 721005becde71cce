"""Per-update schedules, functions of the updates done (a resume continues them, over the number of updates the run
was planned with): learning rate, CQL ramp."""
from __future__ import annotations

import math
from typing import Callable

from .config import LR_DECAYS

#: The learning rate at a decaying run's last update, as a share of `--learning_rate`.
LR_FINAL_RATIO = 0.1


def lr_factor(warmup_steps: int, decay: str = "none", total_steps: int = 0,
              final_ratio: float = LR_FINAL_RATIO) -> Callable[[int], float]:
    """The learning-rate factor of update `i + 1`: a linear warm-up, then `decay` to `final_ratio` at
    `total_steps`."""
    if decay not in LR_DECAYS:
        raise ValueError(f"--lr_decay={decay!r} is not one of {list(LR_DECAYS)}")
    if not 0.0 <= final_ratio <= 1.0:
        raise ValueError(f"final_ratio must be in [0, 1], got {final_ratio}")

    def factor(i: int) -> float:
        warm = 1.0 if warmup_steps <= 0 else min(1.0, (i + 1) / warmup_steps)
        if decay == "none" or total_steps <= warmup_steps:
            return warm
        done = min(1.0, max(0.0, (i + 1 - warmup_steps) / (total_steps - warmup_steps)))
        shape = 0.5 * (1.0 + math.cos(math.pi * done)) if decay == "cosine" else 1.0 - done
        return warm * (final_ratio + (1.0 - final_ratio) * shape)

    return factor


def run_updates(cfg) -> int:
    """The updates a `TrainConfig`'s run makes: `(epochs - start_learning_at_epoch) x grads_per_epoch`."""
    return max(0, cfg.epochs - cfg.start_learning_at_epoch) * cfg.grads_per_epoch


def run_lr_factor(cfg, total_updates: int | None = None) -> Callable[[int], float]:
    """`lr_factor` of a `TrainConfig`: its warm-up and decay, the decay ending at update `total_updates` (default:
    the run's last, `run_updates(cfg)`)."""
    return lr_factor(cfg.lr_warmup_steps, cfg.lr_decay, run_updates(cfg) if total_updates is None else total_updates)


def ramp_factor(start: float, end: float, total_updates: int) -> Callable[[int], float]:
    """The conservative term's share at update `i + 1`: 0 before `start`, 1 from `end` (shares of the run)."""
    if not 0.0 <= start <= end <= 1.0:
        raise ValueError(f"--cql_ramp {start} {end}: needs 0 <= START <= END <= 1 (shares of the run's updates)")

    def factor(i: int) -> float:
        done = i / total_updates if total_updates > 0 else 1.0
        if done >= end:
            return 1.0
        if done < start:
            return 0.0
        return (done - start) / (end - start)

    return factor


def run_cql_factor(cfg, loss, total_updates: int | None = None) -> Callable[[int], float] | None:
    """`ramp_factor` of `--cql_ramp` for `loss` over `total_updates` (default: the run's); None where nothing
    ramps."""
    if cfg.cql_ramp is None or cfg.cql_ramp[1] <= 0 or cfg.cql_coeff == 0:
        return None
    coeff = float(getattr(loss, "cql_coeff", 0.0))
    if coeff <= 0 or not hasattr(loss, "cql_scale"):
        raise ValueError(f"--cql_ramp {cfg.cql_ramp[0]} {cfg.cql_ramp[1]} ramps the conservative term, which "
                         f"{type(loss).__name__} does not have on (cql_coeff={coeff}; AMAGOLoss with a per-action "
                         f"critic and --cql_coeff > 0 has it)")
    return ramp_factor(*cfg.cql_ramp, run_updates(cfg) if total_updates is None else total_updates)
