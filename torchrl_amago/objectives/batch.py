"""Reading a ``[B, T]`` replay window for the loss: the T+1 model sequence, buffer actions, masked reductions.
Values at padded steps are replaced with ``where`` (never multiplied by the mask), so NaN padding reaches nothing."""
from __future__ import annotations

from typing import Iterable, NamedTuple, Optional, Sequence

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.utils import NestedKey
from torch.nn import functional as F

from ..modules.trajectory.windows import trial_windows
from ..spaces import ActionSpace

__all__ = ["AMAGOBatch", "TrialCut", "as_bt", "buffer_actions", "cut_at_trial_starts", "init_sequence", "masked_mean",
           "redq_reduce", "refuse_multistep", "t_plus_one_sequence"]


class TrialCut(NamedTuple):
    """A ``[B, T]`` batch whose rows cross trial starts, as ``W`` windows of one trial each (``[W, T]``: a window
    starts at position 0 and is padded at its end, as the sequence replay pads); see :func:`cut_at_trial_starts`."""

    row: torch.Tensor  #: [W] the source row of each window
    step: torch.Tensor  #: [W, T] the source step at each position (the window's last step repeated on padding)
    mask: torch.Tensor  #: [W, T] bool: a valid step of this window
    rows: int  #: B, the source batch's number of rows
    td: Optional[TensorDictBase] = None  #: the selected keys of the source batch, cut (``[W, T]``)

    def cut(self, x):
        """A tensor or TensorDict ``[B, T, ...]`` of the source batch -> ``[W, T, ...]``."""
        return x[self.row[:, None], self.step]

    def uncut(self, x: torch.Tensor) -> torch.Tensor:
        """``[W, T, ...]`` -> ``[B, T, ...]``: each valid step back to its source place, zeros elsewhere."""
        rows = self.row[:, None].expand_as(self.mask)[self.mask]
        return x.new_zeros(self.rows, *x.shape[1:]).index_put((rows, self.step[self.mask]), x[self.mask])


class AMAGOBatch(NamedTuple):
    """What ``AMAGOLoss.read_batch`` extracts from a ``[B, T]`` window (padding already neutralised); with ``cut``
    set, every field holds the ``[W, T]`` windows of one trial each."""

    mask: torch.Tensor  #: [B, T] bool, False on padding
    reward: torch.Tensor  #: [B, T] raw env reward r_t
    terminated: torch.Tensor  #: [B, T] bool
    action_features: torch.Tensor  #: [B, T, A] float buffer action as critic input (one-hot for discrete)
    action_index: Optional[torch.Tensor]  #: [B, T] long for discrete spaces, else None
    cut: Optional[TrialCut] = None  #: how the batch's rows were cut at trial starts (None: one trial per row)


def as_bt(x: torch.Tensor, B: int, T: int, name) -> torch.Tensor:
    """[B, T] or [B, T, 1] -> [B, T]; ValueError naming the key otherwise."""
    if x.ndim == 3 and x.shape[-1] == 1:
        x = x[..., 0]
    if tuple(x.shape) != (B, T):
        raise ValueError(f"{name!r} must have shape [B, T] or [B, T, 1] = ({B}, {T}[, 1]), got {tuple(x.shape)}")
    return x


def zero_where_invalid(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """``x`` with zeros where ``valid`` (its leading dims) is False."""
    m = valid.reshape(*valid.shape, *([1] * (x.ndim - valid.ndim)))
    return torch.where(m, x, torch.zeros((), dtype=x.dtype, device=x.device))


def t_plus_one_sequence(td: TensorDictBase, keys: Iterable[tuple[NestedKey, NestedKey]], mask: torch.Tensor,
                        mask_key: NestedKey = "mask") -> TensorDictBase:
    """The T+1 model sequence of a ``[B, T]`` window, ``[root[:, 0], next[:, 0], ..., next[:, T-1]]``, so that one
    memory pass shows ``o_0`` to every state (docs/architecture.md): for each ``(dst, src)`` of ``keys``, ``dst``
    ``[B, T+1]`` from ``src`` at the root and ``("next", src)``, plus ``mask_key`` ``[B, T+1]`` (position t+1 is
    valid iff step t is); invalid positions are zeroed. Each row must hold one trial: cut a batch that crosses
    trial starts with :func:`cut_at_trial_starts` first (its ``td``)."""
    B, T = mask.shape
    seq_mask = torch.cat([mask[:, :1], mask], dim=1)
    out = TensorDict({}, batch_size=[B, T + 1], device=td.device)
    for dst, src in keys:
        nxt_key = ("next", *(src if isinstance(src, tuple) else (src,)))
        root, nxt = td.get(src, None), td.get(nxt_key, None)
        if root is None or nxt is None:
            raise ValueError(f"batch has no key {src if root is None else nxt_key!r} (the T+1 sequence reads "
                             f"{dst!r} at the root (step 0) and under 'next')")
        out.set(dst, zero_where_invalid(torch.cat([root[:, :1], nxt], dim=1), seq_mask))
    out.set(mask_key, seq_mask)
    return out


def cut_at_trial_starts(td: TensorDictBase, mask: torch.Tensor, init_key: NestedKey = "is_init",
                        keys: Optional[Sequence[NestedKey]] = None) -> Optional[TrialCut]:
    """How to cut a ``[B, T]`` batch into windows of one trial each, or None where no valid step after a row's first
    starts a trial (the sequence replay's windows; TorchRL's rollouts and collector batches that stay in one trial).

    A trial starts at step t > 0 where root ``init_key`` is True (TorchRL's layout: the reset observation is
    ``root[t]``, never ``("next", ...)[t-1]``) or ``("next", init_key)`` is True at t-1. One host read of the mask
    (none while a CUDA graph is captured: captured updates replay the sequence replay's windows). ``keys``: the keys
    of ``td`` cut into ``TrialCut.td`` (None: every key)."""
    B, T = mask.shape
    nxt_key = ("next", *(init_key if isinstance(init_key, tuple) else (init_key,)))
    root, nxt = td.get(init_key, None), td.get(nxt_key, None)
    if (root is None and nxt is None) or (mask.is_cuda and torch.cuda.is_current_stream_capturing()):
        return None
    starts = torch.zeros_like(mask)
    if root is not None:
        starts[:, 1:] |= as_bt(root, B, T, init_key)[:, 1:].bool()
    if nxt is not None:
        starts[:, 1:] |= as_bt(nxt, B, T, nxt_key)[:, :-1].bool()
    starts &= mask
    if not bool(starts.any()):
        return None
    row, step, inside = trial_windows(starts)
    cut = TrialCut(row, step, inside & mask[row[:, None], step], B)
    src = td if keys is None else td.select(*keys, strict=False)
    return cut._replace(td=cut.cut(src))


def refuse_multistep(td: TensorDictBase, who: str, fix: str) -> None:
    """A ValueError for a batch from TorchRL's ``MultiStep`` postproc (it writes ``steps_to_next_obs``): its
    ``("next", ...)`` observations are n steps ahead, so the T+1 sequence would skip steps."""
    if "steps_to_next_obs" in td.keys():
        raise ValueError(f"{who}: the batch comes from TorchRL's MultiStep (it holds 'steps_to_next_obs'), whose "
                         f"('next', ...) observations are n steps ahead, so the memory would skip steps: {fix}")


def init_sequence(td: TensorDictBase, init_key: NestedKey, mask: torch.Tensor) -> torch.Tensor:
    """``is_init`` over the T+1 positions, ``[B, T+1, 1]`` bool: True at position 0 and at t+1 where a valid
    ``("next", init_key)`` is True (absent: no trial starts inside the window)."""
    B, T = mask.shape
    nxt_key = ("next", *(init_key if isinstance(init_key, tuple) else (init_key,)))
    nxt = td.get(nxt_key, None)
    nxt = torch.zeros(B, T, dtype=torch.bool, device=mask.device) if nxt is None else \
        as_bt(nxt, B, T, nxt_key).bool() & mask
    return torch.cat([torch.ones(B, 1, dtype=torch.bool, device=mask.device), nxt], dim=1).unsqueeze(-1)


def buffer_actions(action: torch.Tensor, mask: torch.Tensor, space: ActionSpace, name="action"):
    """Buffer action in the env's encoding (one-hot or index when discrete) -> (features [B, T, A] float, discrete
    index [B, T] or None); continuous actions clamped to [-1, 1], multi-binary to [0, 1], padding to action 0."""
    B, T = mask.shape
    A = space.dim
    if space.discrete:
        if space.one_hot:
            if action.ndim != 3 or action.shape[:2] != (B, T) or action.shape[-1] != A:
                raise ValueError(f"one-hot {name!r} must be [B, T, {A}] = [{B}, {T}, {A}], got {tuple(action.shape)}")
            first = F.one_hot(torch.zeros_like(mask, dtype=torch.long), A).float()
            feat = torch.where(mask.unsqueeze(-1), action.float().clamp(0, 1), first)
            return space.to_features(feat), feat.argmax(-1)
        idx = torch.where(mask, as_bt(action, B, T, name).long(), 0)
        return space.to_features(idx), idx
    if action.ndim != 3 or action.shape[:2] != (B, T):
        raise ValueError(f"{space.kind} {name!r} must be [B, T, {A}] = [{B}, {T}, {A}], got {tuple(action.shape)}")
    lo = 0.0 if space.kind == "multibinary" else -1.0
    return zero_where_invalid(space.to_features(action).clamp(lo, 1.0), mask), None


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """sum(x * m) / (sum(m) + 1e-5), ``mask`` broadcast over x's trailing dims (the original's masked_avg)."""
    m = mask.reshape(*mask.shape, *([1] * (x.ndim - mask.ndim))).expand_as(x)
    return torch.where(m, x, torch.zeros((), dtype=x.dtype, device=x.device)).sum() / (m.sum() + 1e-5)


def redq_reduce(values: torch.Tensor, num: int, use_min: bool, pick: torch.Tensor | None = None) -> torch.Tensor:
    """REDQ: per entry of ``values [..., C, G]``, the min or mean of ``num`` members drawn with replacement (or the
    ``pick`` indices ``[..., num, G]``) -> ``[..., G]``."""
    if pick is None:
        pick = torch.randint(0, values.shape[-2], (*values.shape[:-2], num, values.shape[-1]), device=values.device)
    sel = torch.take_along_dim(values, pick, dim=-2)
    return sel.amin(-2) if use_min else sel.mean(-2)
