"""The learning-rate schedule of the trainer: a linear warm-up, then optionally a decay over the rest of the run.

`lr_factor(...)(i)` is the multiplier of `--learning_rate` for update `i + 1` (a `LambdaLR` lambda: `i` updates
done). `--lr_decay none` (default, the original's schedule) keeps it at 1 after the warm-up; `cosine` and `linear`
bring it down to `--lr_final_ratio` at the run's last update, so the end of a run (and its final eval) comes from
small steps.
"""
from __future__ import annotations

import math
from typing import Callable

LR_DECAYS = ("none", "cosine", "linear")


def lr_factor(warmup_steps: int, decay: str = "none", total_steps: int = 0,
              final_ratio: float = 0.1) -> Callable[[int], float]:
    """The learning-rate multiplier of update `i + 1`: `min(1, (i + 1) / warmup_steps)`, times the decay from 1 at
    the end of the warm-up to `final_ratio` at update `total_steps`, the run's last (and after it)."""
    if decay not in LR_DECAYS:
        raise ValueError(f"--lr_decay={decay!r} is not one of {list(LR_DECAYS)}")
    if not 0.0 <= final_ratio <= 1.0:
        raise ValueError(f"--lr_final_ratio must be in [0, 1], got {final_ratio}")

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


def run_lr_factor(cfg) -> Callable[[int], float]:
    """`lr_factor` of a `TrainConfig`: its warm-up and decay, the decay ending at the run's last update."""
    return lr_factor(cfg.lr_warmup_steps, cfg.lr_decay, run_updates(cfg), cfg.lr_final_ratio)
