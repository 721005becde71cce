"""The real `flash-attn` and `mamba-ssm` kernels (CUDA only; each test skips where its package or a GPU is missing;
the stand-ins of tests/trainers/test_gpu_readiness.py run everywhere). How to build both for one GPU:
docs/scaling.md, "FlashAttention and Mamba".

- FlashAttention equals SDPA within bf16 precision: the sequence forward, its gradients, a sliding window, and
  acting step by step from the KV cache (which attends with SDPA) against the flash sequence pass.
- Mamba: the step-by-step acting path equals the sequence pass, and `is_init` restarts a row's state.
"""
from __future__ import annotations

import pytest
import torch

from torchrl_amago._optional import available
from torchrl_amago.modules.trajectory import TransformerTrajEncoder, make_trajectory_encoder

needs_flash = pytest.mark.skipif(not (torch.cuda.is_available() and available("flash_attn")),
                                 reason="needs a CUDA GPU and flash-attn")
needs_mamba = pytest.mark.skipif(not (torch.cuda.is_available() and available("mamba_ssm")),
                                 reason="needs a CUDA GPU and mamba-ssm")
D_IN, T, B = 12, 48, 6


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().float(), b.detach().float()
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


def _step_through(enc, x, t, reset_row_0_at: int | None = None) -> torch.Tensor:
    """[B, T, D] outputs of acting one step at a time from a fresh state (row 0's state restarted at one step)."""
    state = enc.init_state(x.shape[0], device="cuda")
    outs = []
    for i in range(x.shape[1]):
        if i == reset_row_0_at:
            state = enc.reset_state(state, torch.arange(x.shape[0], device="cuda") == 0)
        out, state = enc.step(x[:, i], t[:, i], state)
        outs.append(out)
    return torch.stack(outs, 1)


def _pair(d_model: int, n_heads: int):
    """A flash encoder and an SDPA encoder with the same weights, on CUDA, in eval mode (no dropout)."""
    torch.manual_seed(0)
    kw = dict(d_model=d_model, n_heads=n_heads, n_layers=2)
    flash = TransformerTrajEncoder(D_IN, T, attention="flash", **kw).cuda().eval()
    sdpa = TransformerTrajEncoder(D_IN, T, attention="sdpa", **kw).cuda().eval()
    sdpa.load_state_dict(flash.state_dict())
    return flash, sdpa


def _inputs():
    x = torch.randn(B, T, D_IN, device="cuda")
    t = torch.arange(T, device="cuda").expand(B, T)
    return x, t


@needs_flash
@pytest.mark.parametrize("d_model, n_heads", [(128, 8), (128, 4), (256, 8)])  # head dims 16, 32, 32
def test_flash_forward_and_backward_equal_sdpa_within_bf16(d_model, n_heads):
    flash, sdpa = _pair(d_model, n_heads)
    x, t = _inputs()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        ref = sdpa(x, t)
        got = flash(x, t)
    assert _rel(got, ref) < 2e-2
    for window in (8, None):
        xs = [x.clone().requires_grad_(True) for _ in range(2)]
        outs = []
        for enc, xi in zip((flash, sdpa), xs):
            enc.zero_grad(set_to_none=True)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                out = enc(xi, t, window=window)
            (out.float() ** 2).mean().backward()
            outs.append(out)
        assert _rel(outs[0], outs[1]) < 2e-2, f"window={window}"
        assert _rel(xs[0].grad, xs[1].grad) < 5e-2, f"window={window}: input gradient"
        for (name, p_f), p_s in zip(flash.named_parameters(), sdpa.parameters()):
            if p_s.grad is not None and p_s.grad.norm() > 1e-6:
                assert _rel(p_f.grad, p_s.grad) < 5e-2, f"window={window}: grad {name}"


@needs_flash
def test_acting_from_the_kv_cache_equals_the_flash_sequence_pass():
    """The policy acts one step at a time from its KV cache (SDPA with a key mask); trained with flash, the same
    weights give the flash sequence pass's outputs within bf16 precision."""
    flash, _ = _pair(128, 8)
    x, t = _inputs()
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        seq = flash(x, t)
        steps = _step_through(flash, x, t)
    assert _rel(steps, seq) < 2e-2


def _mamba():
    torch.manual_seed(0)
    return make_trajectory_encoder("mamba", D_IN, T, d_model=64, n_layers=2).cuda().eval()


@needs_mamba
def test_mamba_step_equals_sequence():
    enc = _mamba()
    x, t = _inputs()
    with torch.no_grad():
        seq = enc(x, t)
        steps = _step_through(enc, x, t)
    assert _rel(steps, seq) < 1e-3


@needs_mamba
def test_mamba_is_init_restarts_a_row():
    """Row 0 restarts at step 10: its outputs from there equal a fresh sequence pass over steps 10.. ; row 1 runs on."""
    enc = _mamba()
    x, t = _inputs()
    with torch.no_grad():
        outs = _step_through(enc, x, t, reset_row_0_at=10)
        fresh = enc(x[:1, 10:], t[:1, 10:] - 10)
        full = enc(x, t)
    assert _rel(outs[0, 10:], fresh[0]) < 1e-3
    assert _rel(outs[1:], full[1:]) < 1e-3
