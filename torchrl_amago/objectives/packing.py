"""Sequence packing: a batch's short windows share rows, so the loss runs on fewer, fuller rows. Windows are placed
first-fit, longest first, in ``R <= B`` rows of ``T + 1`` positions, each keeping its whole T+1 span; every step sees
the same inputs and mask as before, so the loss, PopArt statistics and gradients are those of the padded batch. The
trajectory encoder must keep windows apart (``segment`` ids). Planning reads the mask on the host, so by default
(``"cpu"``) only CPU batches are packed (docs/api/objectives.md, "Packed windows")."""
from __future__ import annotations

from typing import NamedTuple

import torch
from tensordict import TensorDictBase
from tensordict.utils import NestedKey

from .batch import zero_where_invalid

#: `AMAGOLoss(pack_windows=...)`: which batches are packed (True / False mean always / never)
PACK_MODES = ("cpu", "always", "never")


def pack_mode(value) -> str:
    """A `pack_windows` value -> one of PACK_MODES, or a ValueError naming the argument."""
    if isinstance(value, bool):
        return "always" if value else "never"
    if value not in PACK_MODES:
        raise ValueError(f"pack_windows={value!r}: expected one of {PACK_MODES} (or True / False)")
    return value


def packs_here(mode: str, mask: torch.Tensor) -> bool:
    """Whether a batch whose mask is `mask` is packed under `mode`."""
    return mode == "always" or (mode == "cpu" and mask.device.type == "cpu")


class PackPlan(NamedTuple):
    """Where every packed position comes from (``R`` rows; ``T`` = the batch's window length)."""

    segment: torch.Tensor  #: [R, T+1] long, the source row (window id) of each packed position; -1 where unused
    pos: torch.Tensor  #: [R, T+1] long, position inside the source row's T+1 sequence (0 where unused)

    @property
    def rows(self) -> int:
        return self.segment.shape[0]

    @property
    def seq_valid(self) -> torch.Tensor:
        """[R, T+1] bool: the position holds a window's model input."""
        return self.segment >= 0

    @property
    def step_valid(self) -> torch.Tensor:
        """[R, T] bool: a real step, i.e. its successor position belongs to the same window."""
        return (self.segment[:, :-1] >= 0) & (self.segment[:, :-1] == self.segment[:, 1:])

    def pack_sequence(self, seq: TensorDictBase, mask_key: NestedKey, init_key: NestedKey,
                      segment_key: NestedKey) -> TensorDictBase:
        """``[B, T+1]`` model inputs -> ``[R, T+1]`` (0 where unused), with the mask, window starts and ids."""
        valid = self.seq_valid
        packed = seq[self.segment.clamp(min=0), self.pos].apply(lambda x: zero_where_invalid(x, valid))
        packed.set(mask_key, valid)
        packed.set(init_key, (valid & (self.pos == 0)).unsqueeze(-1))
        packed.set(segment_key, self.segment)
        return packed

    def pack_steps(self, x: torch.Tensor) -> torch.Tensor:
        """A step-level tensor ``[B, T, ...]`` -> ``[R, T, ...]`` (masked steps hold some valid step's values)."""
        T = x.shape[1]
        return x[self.segment[:, :T].clamp(min=0), self.pos[:, :T].clamp(max=T - 1)]

    def unpack_steps(self, x: torch.Tensor, batch_rows: int) -> torch.Tensor:
        """The inverse of :meth:`pack_steps` on valid steps (zeros on padding): ``[R, T, ...]`` -> ``[B, T, ...]``."""
        T = x.shape[1]
        valid = self.step_valid
        out = x.new_zeros(batch_rows, *x.shape[1:])
        out[self.segment[:, :T][valid], self.pos[:, :T][valid]] = x[valid]
        return out


def plan_packing(mask: torch.Tensor) -> PackPlan | None:
    """The packing of a ``[B, T]`` batch, or None when it saves no row (or a row's valid steps are not a prefix)."""
    B, T = mask.shape
    cpu_mask = mask.detach().to("cpu", torch.bool)
    lengths = cpu_mask.sum(1)
    if not torch.equal(cpu_mask, torch.arange(T) < lengths[:, None]):
        return None
    sizes = (lengths + 1).tolist()  # each window's T+1 span
    order = sorted((b for b in range(B) if sizes[b] > 1), key=lambda i: -sizes[i])  # rows with a valid step
    if len(order) < 2 or sizes[order[-1]] + sizes[order[-2]] > T + 1:  # no two windows fit in one row
        return None
    fill: list[int] = []  # used positions per packed row
    place: dict[int, tuple[int, int]] = {}  # source row -> (packed row, start)
    for b in order:
        r = next((r for r, used in enumerate(fill) if used + sizes[b] <= T + 1), len(fill))
        if r == len(fill):
            fill.append(0)
        place[b] = (r, fill[r])
        fill[r] += sizes[b]
    if len(fill) >= B:
        return None
    segment = torch.full((len(fill), T + 1), -1, dtype=torch.long)
    pos = torch.zeros(len(fill), T + 1, dtype=torch.long)
    for b, (r, s) in place.items():
        segment[r, s:s + sizes[b]] = b
        pos[r, s:s + sizes[b]] = torch.arange(sizes[b])
    return PackPlan(segment.to(mask.device), pos.to(mask.device))
