"""bf16 autocast on CPU and the fast paths behind the learner benchmark: σ-reparam stays fp32 under autocast,
the Transformer trains under autocast (attention in fp32 on CPU), and the member-major ensemble MLP equals a
per-member loop without touching its caller's tensors."""
from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from torchrl_amago.modules.ensemble import EnsembleMLP
from torchrl_amago.modules.trajectory import SigmaReparam, TransformerTrajEncoder
from torchrl_amago.modules.trajectory import transformer as transformer_mod

BF16 = torch.bfloat16


def _autocast():
    return torch.autocast("cpu", dtype=BF16)


def test_sigma_reparam_under_autocast_keeps_sigma_and_power_iteration_in_fp32():
    torch.manual_seed(0)
    ref, amp = SigmaReparam(24, 16), SigmaReparam(24, 16)
    amp.load_state_dict(ref.state_dict())
    x = torch.randn(5, 24)
    with torch.no_grad():
        w_hat = ref.effective_weight()  # fp32, before the power-iteration step below
    ref(x)  # one fp32 training step of power iteration
    with _autocast():
        y = amp(x)  # raised "dot: expected both vectors to have same dtype" before the fix
        sigma = amp.sigma()
    assert y.dtype == BF16 and sigma.dtype == torch.float32
    # u, v followed exactly the fp32 power iteration (no bf16 round trip)
    torch.testing.assert_close(amp.u, ref.u, rtol=0, atol=0)
    torch.testing.assert_close(amp.v, ref.v, rtol=0, atol=0)
    torch.testing.assert_close(sigma, ref.sigma(), rtol=0, atol=0)
    # the output is the bf16 linear of the fp32 effective weight (what autocast does with any fp32 weight)
    expect = F.linear(x.to(BF16), w_hat.to(BF16), ref.bias.detach().to(BF16))
    torch.testing.assert_close(y, expect, rtol=0, atol=0)
    y.float().sum().backward()
    assert amp.weight.grad is not None and amp.gamma.grad is not None and torch.isfinite(amp.weight.grad).all()


def test_transformer_trains_under_bf16_autocast_close_to_fp32():
    torch.manual_seed(0)
    enc = TransformerTrajEncoder(6, 33, d_model=32, n_heads=4, d_ff=64, n_layers=2, dropout_ff=0.0, dropout_emb=0.0)
    x, t = torch.randn(3, 33, 6), torch.arange(33).expand(3, 33)
    ref = enc(x, t)
    with _autocast():
        out = enc(x, t)
    assert out.dtype == BF16
    torch.testing.assert_close(out.float(), ref, atol=0.1, rtol=0.05)
    assert (out.float() - ref).abs().mean() < 0.02
    out.float().square().mean().backward()
    grads = [p.grad for p in enc.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_sequence_attention_runs_in_fp32_on_cpu_under_autocast(monkeypatch):
    seen = []
    real = F.scaled_dot_product_attention

    def spy(q, k, v, **kw):
        seen.append((q.dtype, torch.is_autocast_enabled("cpu")))
        return real(q, k, v, **kw)

    monkeypatch.setattr(transformer_mod.F, "scaled_dot_product_attention", spy)
    enc = TransformerTrajEncoder(6, 9, d_model=16, n_heads=2, d_ff=32, n_layers=1)
    x, t = torch.randn(2, 9, 6), torch.arange(9).expand(2, 9)
    with _autocast():
        enc(x, t)
        enc(x, t, window=4)
    enc(x, t)
    assert seen == [(torch.float32, False)] * 3


@pytest.mark.parametrize("lead", [(7,), (2, 3), ()])
def test_ensemble_mlp_member_major_path_equals_per_member_loop(lead):
    torch.manual_seed(0)
    net = EnsembleMLP(3, 5, 8, 3, 4)
    base = torch.randn(*lead, 10)
    x = base[..., 2:7]  # non-contiguous input, like emb[:, :-1]
    x.requires_grad_(True)
    out = net(x)
    assert out.shape == (*lead, 3, 4)
    for c in range(3):
        h = x
        for layer in (net.inp, *net.core):
            h = F.leaky_relu(h @ layer.weight[c] + layer.bias[c], 0.01)
        torch.testing.assert_close(out[..., c, :], h @ net.out.weight[c] + net.out.bias[c])
    out.sum().backward()  # the in-place activations must not break autograd
    assert x.grad is not None and x.grad.shape == x.shape


def test_ensemble_trunk_leaves_its_input_untouched_and_matches_forward():
    torch.manual_seed(0)
    net = EnsembleMLP(4, 6, 8, 2, 3)
    for x in (torch.randn(5, 6), torch.randn(6)):  # [C, H] without lead dims reshapes to a view
        pre = net.first_layer_partial(x, 0, 6, bias=True)  # [*, C, H], the split-first-layer entry point
        pre_copy = pre.clone()
        out = net.trunk(pre)
        torch.testing.assert_close(pre, pre_copy, rtol=0, atol=0)
        torch.testing.assert_close(out, net(x))
    with pytest.raises(ValueError, match="trunk"):
        net.trunk(torch.randn(5, 3, 8))


def test_ensemble_mlp_under_bf16_autocast():
    torch.manual_seed(0)
    net = EnsembleMLP(2, 6, 16, 2, 3)
    x = torch.randn(4, 6)
    with _autocast():
        out = net(x)
    assert out.dtype == BF16
    torch.testing.assert_close(out.float(), net(x), atol=0.05, rtol=0.05)
