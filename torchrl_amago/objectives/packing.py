"""Sequence packing: a batch's short windows share rows, so the loss runs on fewer, fuller rows.

A trimmed ``[B, T]`` batch is as long as its longest window; when trial lengths differ widely, most of its steps
are still padding. Packing places the windows one after another in ``R <= B`` rows. Window ``b`` (``L_b`` valid
steps, a prefix of its row) keeps its whole T+1 span: positions ``s .. s + L_b`` of its packed row hold its
T+1 model inputs, and packed steps ``s .. s + L_b - 1`` its steps (the span's last position is only the
successor state of its last step, so that packed step is masked). Each step therefore sees the same state,
successor state, reward, action and mask as before, and every term of the loss is a masked mean over the same
steps: the loss, the PopArt statistics and the gradients are those of the padded batch
(``tests/objectives/test_packed_batches.py``). The trajectory encoder must keep windows apart: the Transformer
attends only inside a window (``segment`` ids), per-step encoders need nothing; other memories are not packed.

Rows are filled first-fit, longest window first, with capacity ``T + 1`` (the longest window fills a row alone).
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from tensordict import TensorDictBase
from tensordict.utils import NestedKey


class PackPlan(NamedTuple):
    """Where every packed position comes from (``R`` rows; ``T`` = the batch's window length)."""

    row: torch.Tensor  #: [R, T+1] long, source row of each packed T+1 position (0 where unused)
    pos: torch.Tensor  #: [R, T+1] long, position inside the source row's T+1 sequence (0 where unused)
    seq_valid: torch.Tensor  #: [R, T+1] bool, the position holds a window's model input
    step_valid: torch.Tensor  #: [R, T] bool, the packed step is a real step of a window
    segment: torch.Tensor  #: [R, T+1] long, the source row (window id); -1 where unused
    start: torch.Tensor  #: [R, T+1] bool, first position of a window

    @property
    def rows(self) -> int:
        return self.row.shape[0]

    def pack_sequence(self, seq: TensorDictBase, mask_key: NestedKey, init_key: NestedKey,
                      segment_key: NestedKey) -> TensorDictBase:
        """The loss's ``[B, T+1]`` model inputs -> ``[R, T+1]``; unused positions are zeros, the mask is
        ``seq_valid``, ``init_key`` marks each window's start and ``segment_key`` holds the window ids."""
        packed = seq[self.row, self.pos]
        valid = self.seq_valid
        packed = packed.apply(lambda x: torch.where(valid.view(*valid.shape, *(1,) * (x.ndim - 2)), x,
                                                    torch.zeros((), dtype=x.dtype, device=x.device)))
        packed.set(mask_key, valid)
        packed.set(init_key, self.start.unsqueeze(-1))
        packed.set(segment_key, self.segment)
        return packed

    def pack_steps(self, x: torch.Tensor) -> torch.Tensor:
        """A step-level tensor ``[B, T, ...]`` -> ``[R, T, ...]`` (masked steps hold some valid step's values)."""
        T = x.shape[1]
        return x[self.row[:, :T], self.pos[:, :T].clamp(max=T - 1)]


def plan_packing(mask: torch.Tensor) -> PackPlan | None:
    """The packing of a ``[B, T]`` batch whose valid steps are a prefix of each row, or None when it would not
    save a row (or the valid steps of some row are not a prefix)."""
    B, T = mask.shape
    cpu_mask = mask.detach().to("cpu", torch.bool)
    lengths = cpu_mask.sum(1)
    if not torch.equal(cpu_mask, torch.arange(T) < lengths[:, None]):
        return None
    sizes = (lengths + 1).tolist()  # each window's T+1 span
    fill: list[int] = []  # used positions per packed row
    place: dict[int, tuple[int, int]] = {}  # source row -> (packed row, start)
    for b in sorted(range(B), key=lambda i: -sizes[i]):
        if sizes[b] == 1:  # no valid step: nothing to train on
            continue
        r = next((r for r, used in enumerate(fill) if used + sizes[b] <= T + 1), len(fill))
        if r == len(fill):
            fill.append(0)
        place[b] = (r, fill[r])
        fill[r] += sizes[b]
    if len(fill) >= B or not fill:
        return None
    R = len(fill)
    row = torch.zeros(R, T + 1, dtype=torch.long)
    pos = torch.zeros(R, T + 1, dtype=torch.long)
    segment = torch.full((R, T + 1), -1, dtype=torch.long)
    start = torch.zeros(R, T + 1, dtype=torch.bool)
    step_valid = torch.zeros(R, T, dtype=torch.bool)
    for b, (r, s) in place.items():
        n = sizes[b]
        row[r, s:s + n] = b
        pos[r, s:s + n] = torch.arange(n)
        segment[r, s:s + n] = b
        start[r, s] = True
        step_valid[r, s:s + n - 1] = True
    dev = mask.device
    return PackPlan(row.to(dev), pos.to(dev), (segment >= 0).to(dev), step_valid.to(dev), segment.to(dev),
                    start.to(dev))
