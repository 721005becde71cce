import math

import pytest
import torch

from torchrl_amago.modules.distributions import (BetaOutput, DiscreteOutput, MultiBinaryOutput, TanhGaussianOutput,
                                                 tanh_bounded_positive)


def test_discrete_clamps_and_renormalises():
    params = torch.tensor([[20.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    d = DiscreteOutput()(params)
    expected = torch.tensor([[0.99, 1e-3, 1e-3, 1e-3], [0.25, 0.25, 0.25, 0.25]])
    expected = expected / expected.sum(-1, keepdim=True)
    torch.testing.assert_close(d.probs, expected)
    assert d.batch_shape == (2,) and d.sample().shape == (2,)
    assert torch.equal(d.mode, torch.tensor([0, 0]))
    # clamped probabilities carry no gradient: a row where every entry is clamped gets exactly zero gradient
    logits = torch.tensor([[10.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]], requires_grad=True)
    DiscreteOutput()(logits).log_prob(torch.tensor([1, 1])).sum().backward()
    assert torch.equal(logits.grad[0], torch.zeros(4)) and logits.grad[1].abs().min() > 1e-3


def test_discrete_custom_clips():
    params = torch.tensor([30.0, 0.0, 0.0])
    d = DiscreteOutput(1e-6, 1.0)(params)
    p = torch.softmax(params, -1).clamp(1e-6, 1.0)
    torch.testing.assert_close(d.probs, p / p.sum())
    with pytest.raises(ValueError, match="clip"):
        DiscreteOutput(0.5, 0.4)


def test_discrete_log_prob_entropy_shapes():
    d = DiscreteOutput()(torch.randn(5, 3, 4))
    a = d.sample()
    assert a.shape == (5, 3) and a.dtype == torch.int64
    assert d.log_prob(a).shape == (5, 3) and d.entropy().shape == (5, 3) and d.probs.shape == (5, 3, 4)


def test_tanh_bounded_std_range():
    raw = torch.tensor([-1e3, 0.0, 1e3])
    std = tanh_bounded_positive(raw, math.exp(-5), math.exp(2))
    torch.testing.assert_close(std.log(), torch.tensor([-5.0, -1.5, 2.0]))


def test_tanh_gaussian_log_prob_matches_hand_computation():
    torch.manual_seed(0)
    A = 3
    params = torch.randn(4, 2, 2 * A)
    d = TanhGaussianOutput()(params)
    mu, raw = params[..., :A], params[..., A:]
    std = torch.exp(-5 + 3.5 * (torch.tanh(raw) + 1))
    a = torch.tensor([0.3, -1.0, 0.999]).expand(4, 2, A)  # +-1 and 0.999 get clamped to +-0.99
    x = torch.atanh(a.clamp(-0.99, 0.99))
    hand = (torch.distributions.Normal(mu, std).log_prob(x) - torch.log(1 - torch.tanh(x) ** 2)).sum(-1)
    torch.testing.assert_close(d.log_prob(a.clone()), hand, atol=1e-4, rtol=1e-5)
    assert d.batch_shape == (4, 2) and d.event_shape == (A,)
    torch.testing.assert_close(d.mean, torch.tanh(mu))
    assert d.entropy().shape == (4, 2)


def test_tanh_gaussian_rsample_uses_cached_pre_tanh_value():
    params = torch.cat([torch.full((1, 1), 4.0), torch.full((1, 1), -10.0)], -1)  # mu=4, std ~ e^-5: |y| > 0.99
    d = TanhGaussianOutput()(params)
    y = d.rsample()
    assert y.abs().item() > 0.99
    lp_cached, lp_clamped = d.log_prob(y), d.log_prob(y.clone())
    assert lp_cached.item() > lp_clamped.item() + 10  # the clamped value is ~26 stds away from mu
    params.requires_grad_(True)
    d = TanhGaussianOutput()(params)
    d.rsample().sum().backward()
    assert params.grad.abs().sum() > 0


def test_beta_params_log_prob_and_mean():
    torch.manual_seed(0)
    A = 2
    params = torch.randn(3, 2 * A)
    d = BetaOutput()(params)
    alpha = torch.nn.functional.softplus(params[:, :A]) + 1.0001
    beta = torch.nn.functional.softplus(params[:, A:]) + 1.0001
    a = torch.tensor([0.2, 1.0]).expand(3, A)
    hand = (torch.distributions.Beta(alpha, beta).log_prob((a.clamp(-0.99, 0.99) + 1) / 2) - math.log(2)).sum(-1)
    torch.testing.assert_close(d.log_prob(a), hand, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(d.mean, 2 * alpha / (alpha + beta) - 1)
    s = d.rsample()
    assert s.shape == (3, A) and (s.abs() <= 1).all() and d.entropy().shape == (3,)


def test_multibinary_log_prob_is_averaged():
    logits = torch.tensor([[2.0, -1.0, 0.5]])
    d = MultiBinaryOutput()(logits)
    a = torch.tensor([[1.0, 0.0, 0.0]])
    p = torch.sigmoid(logits)
    hand = (a * p.log() + (1 - a) * (1 - p).log()).mean(-1)
    torch.testing.assert_close(d.log_prob(a), hand)
    assert torch.equal(d.mode, torch.tensor([[1.0, 0.0, 1.0]]))
    assert d.sample().shape == (1, 3) and d.entropy().shape == (1,)
