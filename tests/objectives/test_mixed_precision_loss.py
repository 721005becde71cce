"""AMAGOLoss under bf16 autocast on CPU (the trainer's `--mixed_precision bf16`): fp32 losses and statistics,
values and gradients close to the fp32 computation, every kind of head."""
from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from ._build import build, make_batch

CASES = [("discrete", "auto"), ("continuous", "auto"), ("discrete", "two_hot"), ("multibinary", "auto")]


def _run(loss, batch, amp: bool, seed: int = 0):
    torch.manual_seed(seed)  # same REDQ draws / samples in both runs
    loss.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        out = loss(batch.clone())
    (out["loss_actor"] + out["loss_critic"]).backward()
    g = {n: p.grad.detach().clone() for n, p in loss.named_parameters() if p.grad is not None}
    return out.detach(), g


@pytest.mark.filterwarnings("ignore:No target network updater")
@pytest.mark.parametrize("kind,critic", CASES)
def test_bf16_autocast_loss_matches_fp32(kind, critic):
    # the binary filter flips on near-zero advantages under any rounding change; the exp filter is continuous
    loss = build(kind, critic, online_coeff=0.0 if kind == "multibinary" else 1.0, fbc_filter="exp")
    for m in loss.modules():  # dropout masks drawn in bf16 and fp32 differ; compare the deterministic part
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    batch = make_batch(kind)
    state = {k: v.clone() for k, v in loss.state_dict().items()}
    out32, g32 = _run(loss, batch, amp=False)
    loss.load_state_dict(state)  # undo the PopArt / InputNorm statistics update of the first call
    out16, g16 = _run(loss, batch, amp=True)
    assert set(out16.keys()) == set(out32.keys())
    for key in ("loss_actor", "loss_critic", "td_target_mean", "q_mean", "popart_mu", "popart_sigma"):
        v16, v32 = out16[key], out32[key]
        assert v16.dtype == torch.float32, key
        torch.testing.assert_close(v16, v32, rtol=0.05, atol=0.05 * float(v32.abs().max()) + 1e-3, msg=key)
    assert g16.keys() == g32.keys() and len(g32) > 0
    for group in ("timestep_encoder", "trajectory_encoder", "actor_head", "critic_head"):
        a = torch.cat([g32[n].flatten() for n in g32 if n.startswith(group)])
        b = torch.cat([g16[n].flatten() for n in g16 if n.startswith(group)])
        assert torch.isfinite(b).all(), group
        assert F.cosine_similarity(a, b, dim=0) > 0.95, group
