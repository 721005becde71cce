import math

import pytest
import torch

from torchrl_amago.modules.input_norm import InputNorm


def _ema(mu, nu, t, x, beta=1e-4):
    """Hand computation of one bias-corrected update in float64."""
    t = t + 1
    bt = beta / (1 - (1 - beta) ** t)
    return (1 - bt) * mu + bt * x.mean(0), (1 - bt) * nu + bt * (x**2).mean(0), t


def test_first_update_is_about_half_and_matches_hand_computation():
    torch.manual_seed(0)
    norm = InputNorm(3)
    x1, x2 = torch.randn(4, 5, 3) * 2 + 1, torch.randn(6, 3) - 3
    norm.update_stats(x1)
    norm.update_stats(x2)
    mu, nu, t = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64), 1
    beta_1 = 1e-4 / (1 - (1 - 1e-4) ** 2)
    assert beta_1 == pytest.approx(0.500025, abs=1e-6)
    mu, nu, t = _ema(mu, nu, t, x1.reshape(-1, 3).double())
    mu, nu, t = _ema(mu, nu, t, x2.double())
    torch.testing.assert_close(norm.mu.double(), mu, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(norm.nu.double(), nu, atol=1e-6, rtol=1e-5)
    assert norm._t.item() == 3
    sigma = torch.sqrt(nu - mu**2 + 1e-5).clamp(1e-3, 1e6)
    y = torch.randn(2, 3)
    torch.testing.assert_close(norm.normalize(y).double(), (y.double() - mu) / sigma, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(norm.denormalize(norm.normalize(y)), y, atol=1e-5, rtol=1e-5)


def test_padding_rows_are_excluded_and_changing_them_changes_nothing():
    torch.manual_seed(1)
    x = torch.randn(3, 4, 2)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.bool)
    a, b, ref = InputNorm(2), InputNorm(2), InputNorm(2)
    out_a = a.train()(x, mask)
    x_garbage = x.clone()
    x_garbage[~mask] = torch.tensor([4.0, float("nan")])
    x_garbage[2, 3] = 1e6
    out_b = b.train()(x_garbage, mask)
    ref.update_stats(x[mask])  # only the valid rows
    for n in (a, b):
        torch.testing.assert_close(n.mu, ref.mu)
        torch.testing.assert_close(n.nu, ref.nu)
    torch.testing.assert_close(out_a[mask], out_b[mask])


def test_all_masked_batch_is_a_noop():
    norm = InputNorm(2)
    norm.update_stats(torch.randn(5, 2), torch.zeros(5, dtype=torch.bool))
    assert norm._t.item() == 1 and torch.equal(norm.mu, torch.zeros(2)) and torch.equal(norm.nu, torch.ones(2))


def test_updates_only_in_training_mode():
    norm = InputNorm(2)
    x = torch.randn(8, 2) + 5
    norm.eval()(x)
    assert norm._t.item() == 1 and torch.equal(norm.mu, torch.zeros(2))
    norm.train()(x)
    assert norm._t.item() == 2 and norm.mu.abs().sum() > 1.0


def test_small_sigma_falls_back_to_centring():
    norm = InputNorm(2)
    norm.mu.copy_(torch.tensor([2.0, 0.0]))
    norm.nu.copy_(torch.tensor([4.0, 4.0]))  # feature 0: variance 0 -> sigma = sqrt(1e-5) < 0.01
    x = torch.tensor([[3.0, 1.0]])
    out = norm.normalize(x)
    assert out[0, 0].item() == pytest.approx(1.0)  # centred, not scaled
    assert out[0, 1].item() == pytest.approx(1.0 / math.sqrt(4.0 + 1e-5))
    torch.testing.assert_close(norm.denormalize(out), x)


def test_bad_shapes_raise():
    norm = InputNorm(3)
    with pytest.raises(ValueError, match="last dim 3"):
        norm(torch.randn(4, 2))
    with pytest.raises(ValueError, match="mask"):
        norm.update_stats(torch.randn(4, 3), torch.ones(5, dtype=torch.bool))
