"""The conservative critic term of ``AMAGOLoss(cql_coeff=...)`` (CQL(H), Kumar et al. 2020; not in the original).

With a per-action critic (``DiscreteCritic``) the critic loss gains, per step, critic and gamma,
``cql_coeff * cql_scale * (logsumexp_a Q(s, a) - Q(s, a_buffer))`` in the units the critic is trained in
(PopArt-normalised). It pushes down the values of the actions the replay rarely takes in a state, which few TD
targets correct. ``cql_scale`` is a non-persistent scalar buffer of the loss (1 at construction) that a schedule
may fill in place between updates (so a captured CUDA graph reads the new value).
"""
from __future__ import annotations

from typing import Optional

import torch

__all__ = ["check_cql_coeff", "conservative_gap"]


def check_cql_coeff(cql_coeff: float, q_per_action: bool) -> float:
    """``cql_coeff`` as a float, or a ValueError: it must be >= 0, and > 0 only with a per-action critic."""
    if cql_coeff < 0 or (cql_coeff > 0 and not q_per_action):
        raise ValueError(f"cql_coeff={cql_coeff}: must be >= 0, and > 0 only with a per-action critic (a "
                         f"DiscreteCritic with discrete actions, not two-hot): the term needs Q(s, .) of every action")
    return float(cql_coeff)


def conservative_gap(q_all: torch.Tensor, pred: torch.Tensor, popart: Optional[torch.nn.Module]) -> torch.Tensor:
    """``logsumexp_a Q(s, a) - Q(s, a_buffer)`` ``[B, T, C, G]`` in the critic's training units.

    ``q_all``: the critic's raw outputs ``[B, T, C, G, A]``; ``pred``: Q(s, a_buffer) as trained ``[B, T, C, G]``
    (already through ``popart``); ``popart``: the loss's PopArt layer when the critic is PopArt-normalised, else
    None."""
    pred_all = popart(q_all.movedim(-1, 0)).movedim(0, -1) if popart is not None else q_all
    return torch.logsumexp(pred_all, -1) - pred
