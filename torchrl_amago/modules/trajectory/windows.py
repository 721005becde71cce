"""Rows that cross trial starts as windows of one trial each: a memory restarts at a trial start, and a row that holds
the end of one trial and the start of the next (TorchRL's rollouts and collector batches) runs as two windows."""
from __future__ import annotations

import torch


def trial_windows(starts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows ``[B, T]`` cut before every step where ``starts`` is True (column 0 is a row's own start) ->
    ``row`` ``[W]`` (each window's row), ``step`` ``[W, T]`` (the row's step at each window position, from position 0;
    the window's last step repeated after its end) and ``inside`` ``[W, T]`` (the position holds a step of the window).
    Windows come in row order. One host read (the number of windows)."""
    B, T = starts.shape
    dev, k = starts.device, torch.arange(T, device=starts.device)
    win = starts.clone()
    win[:, 0] = False
    win = win.long().cumsum(1)  # [B, T] each step's window inside its row
    per_row = win[:, -1] + 1
    wid = ((per_row.cumsum(0) - per_row)[:, None] + win).reshape(-1)  # [B * T] global window ids, in order
    W = int(per_row.sum())
    first = torch.full((W,), T, device=dev).scatter_reduce(0, wid, k.repeat(B), "amin")
    last = first + torch.bincount(wid, minlength=W) - 1
    row = torch.repeat_interleave(torch.arange(B, device=dev), per_row)
    return row, torch.minimum(first[:, None] + k, last[:, None]), first[:, None] + k <= last[:, None]
