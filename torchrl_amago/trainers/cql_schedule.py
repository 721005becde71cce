"""The conservative term's weight in a trainer run: its default, and `--cql_ramp START END` over the run.

`--cql_coeff` left unset is `CQL_COEFF` (0.1) where a discount reaches `DEFAULT_TARGET_BACKBONE_MIN_GAMMA`
(0.9999, the horizons of 10,000 steps and more at which the loss also builds the encoders' target copy) and the critic
is per-action (a `DiscreteCritic`), and 0 (off, the original's critic loss) everywhere else. There it is off for the
run's first tenth and then ramps to full weight at the end (`--cql_ramp 0.1 1`); an explicit `--cql_coeff` is at full
weight from the first update unless `--cql_ramp` says otherwise.

The ramp's fraction is 0 before START x the run's updates, rises linearly to 1 at END x the run's updates and stays 1
after (fractions of the run in [0, 1]; `0 0` is 1 from the first update). A ramp keeps the term out of the run's
first updates, where under greedy collection it can lock the first policy in (docs/api/objectives.md, "A
conservative critic"); at T-Maze's horizon of 1,000 even a ramp that starts at 0 (1 % of full weight after the
first epoch) does, so the default starts later. The trainer writes the fraction into `AMAGOLoss.cql_scale` before
each update, so a resumed run continues the ramp from its update count.
"""
from __future__ import annotations

from typing import Callable, Sequence

from ..objectives import DEFAULT_TARGET_BACKBONE_MIN_GAMMA
from .lr_schedule import run_updates

#: The term's weight wherever a default turns it on (here, and `presets.SAMPLED_DISCRETE_PRESET`).
CQL_COEFF = 0.1
LONG_HORIZON_CQL_RAMP = (0.1, 1.0)
CONSTANT = (0.0, 0.0)


def ramp_factor(start: float, end: float, total_updates: int) -> Callable[[int], float]:
    """The fraction of the term's weight at update `i + 1` (`i` updates done) of a run of `total_updates`."""
    _check_range(start, end)

    def factor(i: int) -> float:
        done = i / total_updates if total_updates > 0 else 1.0
        if done >= end:
            return 1.0
        if done < start:
            return 0.0
        return (done - start) / (end - start)

    return factor


def cql_coeff_of(cfg, gammas: Sequence[float], per_action_critic: bool) -> float:
    """`--cql_coeff` as the loss uses it: the flag, or where it is unset the long-horizon default (module doc)."""
    if cfg.cql_coeff is not None:
        return float(cfg.cql_coeff)
    long_horizon = max(gammas) >= DEFAULT_TARGET_BACKBONE_MIN_GAMMA
    return CQL_COEFF if long_horizon and per_action_critic else 0.0


def cql_ramp_of(cfg, loss_cql_coeff: float) -> tuple[float, float]:
    """`--cql_ramp` as the run uses it, given the loss's resolved weight: the flag, or where it is unset the long-horizon
    default's ramp for the default weight and full weight for an explicit one."""
    if cfg.cql_ramp is not None:
        start, end = _pair(cfg.cql_ramp)
        if end > 0 and loss_cql_coeff <= 0:
            raise ValueError(f"--cql_ramp {start} {end} ramps the conservative term, which is off in this run "
                             f"(--cql_coeff 0, or a critic without per-action values): set --cql_coeff > 0")
        return start, end
    return LONG_HORIZON_CQL_RAMP if cfg.cql_coeff is None and loss_cql_coeff > 0 else CONSTANT


def run_cql_factor(cfg, loss_cql_coeff: float) -> Callable[[int], float] | None:
    """`ramp_factor` of a run's `--cql_ramp` over its updates; None where nothing ramps (the term is off, or at full
    weight from the first update)."""
    start, end = cql_ramp_of(cfg, loss_cql_coeff)
    if loss_cql_coeff <= 0 or end <= 0:
        return None
    return ramp_factor(start, end, run_updates(cfg))


def _pair(ramp: Sequence[float]) -> tuple[float, float]:
    if len(ramp) != 2:
        raise ValueError(f"--cql_ramp takes two fractions, START END, got {list(ramp)}")
    return float(ramp[0]), float(ramp[1])


def _check_range(start: float, end: float) -> None:
    if not 0.0 <= start <= end <= 1.0:
        raise ValueError(f"--cql_ramp {start} {end}: needs 0 <= START <= END <= 1 (fractions of the run's updates)")


def check_cql_flags(cfg) -> None:
    """The flags' ranges, and a ramp on a term set to 0 (called from `TrainConfig.validate`; a term off for want of a
    per-action critic is found once the loss is built, by `cql_ramp_of`)."""
    if cfg.cql_coeff is not None and cfg.cql_coeff < 0:
        raise ValueError(f"--cql_coeff must be >= 0 (or unset), got {cfg.cql_coeff}")
    if cfg.cql_ramp is not None:
        _check_range(*_pair(cfg.cql_ramp))
        if cfg.cql_coeff is not None:
            cql_ramp_of(cfg, cfg.cql_coeff)
