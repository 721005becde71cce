"""Multi-gamma n-step TD targets that stop at terminals and at padding.

One function, used by the loss and by anything else that needs AMAGO's targets, so the masking rules live
in one place: rewards are accumulated with gamma^i until a step is ``terminated`` (its reward counts, no
bootstrap) or the next step is padding / outside the window (bootstrap from the successor of the last
accumulated step). ``truncated`` is not an input on purpose: it never stops bootstrapping.
"""
from __future__ import annotations

import torch

__all__ = ["nstep_return", "tree_backup_return"]


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


def nstep_return(
    reward: torch.Tensor,
    terminated: torch.Tensor,
    valid: torch.Tensor,
    next_value: torch.Tensor,
    gammas: torch.Tensor,
    n: int = 1,
    reward_multiplier: float = 1.0,
    continues: torch.Tensor | None = None,
) -> torch.Tensor:
    """n-step targets for every step of a ``[B, T]`` window and every discount in ``gammas``.

    Args:
        reward: ``[B, T]`` or ``[B, T, 1]`` reward of step t (raw env reward).
        terminated: ``[B, T]`` or ``[B, T, 1]`` bool, step t ended in a terminal state.
        valid: ``[B, T]`` or ``[B, T, 1]`` bool, False on padding.
        next_value: ``[B, T, ..., G]`` value of the successor state s_{t+1} of step t (already a state value,
            e.g. the reduced target Q at the target policy's action), in the same scale as
            ``reward * reward_multiplier``.
        gammas: ``[G]`` discounts.
        n: number of reward steps before bootstrapping (>= 1).
        reward_multiplier: rewards are scaled by this constant first.
        continues: optional bool ``[B, T]`` or ``[B, T, ..., G]``: an earlier step's return may go on through step
            t (False: stop before step t and bootstrap from s_t, as if step t were padding). None: always.

    Returns:
        ``[B, T, ..., G]``: ``sum_{i<k} g^i r_{t+i} + g^k (1 - term_{t+k-1}) V(s_{t+k})`` where k <= n stops at the
        first terminal or before the first invalid step; 0 where step t itself is invalid.
    """
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
        valid_i = _shift_left(val, i, False)
        q_i = _shift_left(next_value, i, 0.0)
        active = alive & valid_i
        ret = ret + torch.where(active, gammas**i * r_i, 0.0)
        next_ok = _shift_left(go_on, i + 1, False) if i + 1 < n else torch.zeros_like(go_on)
        stop = active & ~term_i & ~next_ok  # last accumulated step, non-terminal: bootstrap from its successor
        ret = ret + torch.where(stop, gammas ** (i + 1) * q_i, 0.0)
        alive = active & ~term_i & next_ok
    return ret


def tree_backup_return(
    reward: torch.Tensor,
    terminated: torch.Tensor,
    valid: torch.Tensor,
    next_value: torch.Tensor,
    next_q_taken: torch.Tensor,
    next_prob_taken: torch.Tensor,
    gammas: torch.Tensor,
    n: int = 1,
    reward_multiplier: float = 1.0,
) -> torch.Tensor:
    """n-step Tree Backup targets (Precup et al. 2000) for discrete actions: off-policy without behaviour
    probabilities. ``G_t = y_t + g (1 - term_t) pi(a_{t+1}|s_{t+1}) (G_{t+1} - Q(s_{t+1}, a_{t+1}))`` with the
    1-step target ``y_t = r_t + g (1 - term_t) V(s_{t+1})``, cut after n reward steps and before padding.

    Args are those of ``nstep_return`` plus, indexed like ``next_value`` (by step t, about step t + 1):
        next_q_taken: ``[B, T, ..., G]`` Q(s_{t+1}, a_{t+1}) of the buffer action, in ``next_value``'s scale.
        next_prob_taken: ``[B, T, ..., G]`` pi(a_{t+1}|s_{t+1}) under the target policy.

    A policy that puts probability 1 on the buffer actions, with ``next_value == next_q_taken``, gives
    ``nstep_return``'s uncut targets; probability 0 gives 1-step targets.
    """
    one_step = nstep_return(reward, terminated, valid, next_value, gammas, 1, reward_multiplier)
    if n == 1:
        return one_step
    term = _per_step(terminated, "terminated", next_value).bool()
    val = _per_step(valid, "valid", next_value).bool()
    gammas = gammas.to(next_value.dtype)
    ret, trace = one_step, torch.ones_like(next_value)
    for i in range(1, n):  # step t + i enters t's return through pi(a_{t+i}|s_{t+i})
        go_on = _shift_left(~term, i - 1, False) & _shift_left(val, i, False)
        trace = trace * gammas * torch.where(go_on, _shift_left(next_prob_taken, i - 1, 0.0), 0.0)
        ret = ret + trace * (_shift_left(one_step, i, 0.0) - _shift_left(next_q_taken, i - 1, 0.0))
    return torch.where(val, ret, 0.0)
