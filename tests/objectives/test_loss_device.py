"""`AMAGOLoss.to(...)` moves everything the loss reads. The heads are functional (their parameters live in
`*_params`), so their own buffers — the two-hot critic's `bins`, read outside a functional call by `to_value` and
`labels` — once stayed behind: a multi-task loss moved to CUDA crashed in its first update."""
from __future__ import annotations

import pytest
import torch

from ._build import build, make_batch

CASES = [("discrete", "auto"), ("continuous", "auto"), ("discrete", "two_hot"), ("continuous", "two_hot")]


def _head_buffers(loss):
    return {f"{head}.{name}": buf for head in ("actor_head", "critic_head")
            for name, buf in getattr(loss, head).named_buffers()}


def _losses(loss, batch):
    loss.eval()  # no dropout: its masks are drawn differently per dtype / device
    torch.manual_seed(0)  # same REDQ draws and action samples on both devices / dtypes
    out = loss(batch)
    return {k: float(out[k]) for k in ("loss_actor", "loss_critic")}


@pytest.mark.filterwarnings("ignore:No target network updater")
@pytest.mark.parametrize("kind,critic", CASES)
def test_double_reaches_head_buffers_and_the_loss_runs_in_float64(kind, critic):
    loss = build(kind, critic)
    want = _losses(loss, make_batch(kind))
    loss = loss.double()
    assert all(b.dtype == torch.float64 for b in _head_buffers(loss).values() if b.is_floating_point())
    assert ("critic_head.bins" in _head_buffers(loss)) == (critic == "two_hot")
    batch = make_batch(kind).apply(lambda x: x.double() if x.is_floating_point() else x)
    got = _losses(loss, batch)
    for k in want:  # float64 random draws (REDQ subsets aside) differ from float32 ones: same scale only
        assert got[k] == pytest.approx(want[k], rel=0.2, abs=0.05), k


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.filterwarnings("ignore:No target network updater")
@pytest.mark.parametrize("kind,critic", CASES)
def test_loss_on_cuda_equals_cpu(kind, critic):
    loss = build(kind, critic)
    want = _losses(loss, make_batch(kind))
    loss = loss.to("cuda")
    assert all(b.is_cuda for b in _head_buffers(loss).values())
    got = _losses(loss, make_batch(kind).to("cuda"))
    for k in want:  # the random draws differ between devices: same scale, not the same numbers
        assert got[k] == pytest.approx(want[k], rel=0.5, abs=0.5), k
