"""Multi-gamma n-step TD targets that stop at terminals and at padding (``truncated`` never stops them), and the
``n_step_cut`` rule: a return also stops before a buffer action the target policy rates below ``n_step_cut`` x its
mode's probability."""
from __future__ import annotations

import torch

__all__ = ["check_n_step", "greedy_continues", "nstep_return"]


def _shift_left(x: torch.Tensor, i: int, fill) -> torch.Tensor:
    """x[:, t] -> x[:, t + i] along dim 1, filling the last i positions with `fill`."""
    if i == 0:
        return x
    pad = torch.full_like(x[:, :i], fill)
    return torch.cat([x[:, i:], pad], dim=1)


def _per_step(x: torch.Tensor, name: str, like: torch.Tensor) -> torch.Tensor:
    """``[B, T]`` or ``[B, T, 1]`` -> ``[B, T, 1, ..., 1]``, broadcastable over ``like`` (``[B, T, ..., G]``)."""
    B, T = like.shape[:2]
    if x.ndim == 3 and x.shape[-1] == 1:
        x = x[..., 0]
    if tuple(x.shape) != (B, T):
        raise ValueError(f"{name} must be [B, T] or [B, T, 1] with B, T = {B}, {T}; got {tuple(x.shape)}")
    return x.reshape(B, T, *(1,) * (like.ndim - 2))


def nstep_return(reward: torch.Tensor, terminated: torch.Tensor, valid: torch.Tensor, next_value: torch.Tensor,
                 gammas: torch.Tensor, n: int = 1, reward_multiplier: float = 1.0,
                 continues: torch.Tensor | None = None) -> torch.Tensor:
    """n-step targets ``[B, T, ..., G]`` of a ``[B, T]`` window for every discount of ``gammas`` ``[G]``:
    ``sum_{i<k} g^i r_{t+i} + g^k (1 - term_{t+k-1}) V(s_{t+k})``, k <= n stopping at the first terminal or before
    the first invalid step (0 where step t is invalid).

    ``reward``, ``terminated``, ``valid``: ``[B, T(, 1)]``; ``next_value``: V(s_{t+1}) of step t ``[B, T, ..., G]``,
    in the units of ``reward * reward_multiplier``; ``continues`` (optional, ``[B, T]`` or ``[B, T, ..., G]``):
    False stops a return before step t (bootstrapping from s_t)."""
    if n < 1:
        raise ValueError(f"n_step must be >= 1, got {n}")
    if next_value.ndim < 3:
        raise ValueError(f"next_value must be [B, T, ..., G], got shape {tuple(next_value.shape)}")
    G = next_value.shape[-1]
    if gammas.ndim != 1 or gammas.shape[0] != G:
        raise ValueError(f"gammas must be [G={G}], got shape {tuple(gammas.shape)}")

    r = _per_step(reward, "reward", next_value).to(next_value.dtype) * reward_multiplier
    term = _per_step(terminated, "terminated", next_value).bool()
    val = _per_step(valid, "valid", next_value).bool()
    gammas = gammas.to(next_value.dtype)
    go_on = val if continues is None else val & (continues.bool() if continues.ndim > 2 else
                                                 _per_step(continues, "continues", next_value).bool())

    ret = torch.zeros_like(next_value)
    alive = torch.ones_like(val)  # still accumulating into step t's return
    for i in range(n):
        r_i = _shift_left(r, i, 0.0)
        term_i = _shift_left(term, i, True)
        q_i = _shift_left(next_value, i, 0.0)
        active = alive & _shift_left(val, i, False)
        ret = ret + torch.where(active, gammas**i * r_i, 0.0)
        next_ok = _shift_left(go_on, i + 1, False) if i + 1 < n else torch.zeros_like(go_on)
        stop = active & ~term_i & ~next_ok  # last accumulated step, non-terminal: bootstrap from its successor
        ret = ret + torch.where(stop, gammas ** (i + 1) * q_i, 0.0)
        alive = active & ~term_i & next_ok
    return ret


def check_n_step(n_step: int, n_step_cut: float, discrete: bool, kind: str = "continuous") -> int:
    """The return length of ``AMAGOLoss(n_step=..., n_step_cut=...)``, or a ValueError (a fraction of
    ``n_step_cut`` needs discrete actions; 1 with other actions means 1-step returns)."""
    if n_step < 1:
        raise ValueError(f"n_step must be >= 1, got {n_step}")
    if not 0.0 <= n_step_cut <= 1.0 or (0.0 < n_step_cut < 1.0 and not discrete):
        raise ValueError(f"n_step_cut={n_step_cut}: must be in [0, 1], and 0 or 1 for {kind} actions "
                         f"(a fraction compares a discrete buffer action's probability with the mode's)")
    return 1 if (n_step_cut == 1.0 and not discrete) else int(n_step)


def greedy_continues(probs_next: torch.Tensor, action_index: torch.Tensor, n_step_cut: float) -> torch.Tensor:
    """``continues`` ``[B, T, G]`` of :func:`nstep_return`: False where pi'(a_t|s_t) < ``n_step_cut`` *
    max_a pi'(a|s_t), from ``probs_next`` ``[B, T, G, A]`` (pi' at s_{t+1} of step t) and ``action_index``
    ``[B, T]``; step 0 is always True."""
    probs = probs_next[:, :-1]  # pi'(.|s_t) for t = 1..T-1
    a = action_index[:, 1:, None, None].expand(*probs.shape[:-1], 1)
    keep = probs.gather(-1, a).squeeze(-1) >= n_step_cut * probs.amax(-1)
    return torch.cat([torch.ones_like(keep[:, :1]), keep], dim=1)
