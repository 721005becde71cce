import math

import pytest
import torch

from torchrl_amago.objectives.filters import binary_filter, exp_filter, leaky_relu_filter, make_filter

ADV = torch.tensor([-3.0, -0.5, 0.0, 0.005, 0.5, 30.0])


def test_binary():
    assert binary_filter(ADV).tolist() == [False, False, False, True, True, True]
    assert binary_filter(ADV, threshold=0.4).tolist() == [False, False, False, False, True, True]


def test_exp():
    w = exp_filter(ADV, beta=2.0)
    torch.testing.assert_close(w, torch.exp(2 * ADV).clamp(min=1e-7))
    w = exp_filter(ADV, beta=1.0, clip_adv_high=1.0, clip_weights_high=2.0)
    assert w[-1].item() == pytest.approx(2.0)
    assert w[1].item() == pytest.approx(math.exp(-0.5))


def test_leaky_relu_values():
    """The original's leaky_relu_filter (reference/amago_nets.md, amago_crosscheck.md): ramp, clip to [1e-7, 10],
    then + 1 for A > 0 by default, so the weights reach 11."""
    w = leaky_relu_filter(ADV, add_binary=False)
    # f(0) = target_f0 by construction
    assert w[2].item() == pytest.approx(1e-2, abs=1e-7)
    # above the hinge tau=0.01: bias + (a - tau)/beta with bias = .01 + .05*.01/2
    bias = 0.01 + 0.05 * 0.01 / 2
    assert w[4].item() == pytest.approx(bias + (0.5 - 0.01) / 2)
    # below the hinge: bias + .05*(a - tau)/beta (a = -0.1 stays positive), clipped at 1e-7 further down
    assert leaky_relu_filter(torch.tensor(-0.1)).item() == pytest.approx(bias + 0.05 * (-0.1 - 0.01) / 2)
    assert w[1].item() == pytest.approx(1e-7)
    assert w[0].item() == pytest.approx(1e-7)
    assert w[-1].item() == pytest.approx(10.0)  # clip high
    wb = leaky_relu_filter(ADV)  # the default adds the binary term, after the clip
    assert wb[4].item() == pytest.approx(1 + bias + (0.5 - 0.01) / 2)
    assert wb[-1].item() == pytest.approx(11.0)  # clipped ramp 10 + 1: the original's maximum
    assert wb[3].item() == pytest.approx(1 + bias + 0.05 * (0.005 - 0.01) / 2)  # 0 < A < tau: still + 1
    assert wb[1].item() == pytest.approx(1e-7) and wb[2].item() == pytest.approx(1e-2, abs=1e-7)  # A <= 0: no + 1


def test_make_filter():
    assert make_filter("binary") is binary_filter
    f = make_filter("exp", beta=3.0)
    torch.testing.assert_close(f(ADV[:3]), torch.exp(3 * ADV[:3]))
    g = make_filter(lambda a: a.abs())
    assert g(ADV)[0].item() == 3.0
    with pytest.raises(ValueError, match="fbc_filter"):
        make_filter("nope")
