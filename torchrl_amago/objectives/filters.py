"""Advantage filters f(A) of AMAGO's filtered behaviour cloning term ``-f(A) * log pi(a|s)``, as the original's:
each maps an advantage tensor to weights of the same shape (bool for the binary filter)."""
from __future__ import annotations

from functools import partial
from typing import Callable, Optional, Union

import torch
from torch.nn import functional as F

__all__ = ["binary_filter", "exp_filter", "leaky_relu_filter", "make_filter", "FILTERS"]


def binary_filter(adv: torch.Tensor, threshold: float = 0.0) -> torch.Tensor:
    """CRR-style 0/1 weight: keep the actions whose advantage is above ``threshold`` (default 0)."""
    return adv > threshold


def exp_filter(adv: torch.Tensor, beta: float = 1.0, clip_adv_low: Optional[float] = None,
               clip_adv_high: Optional[float] = None, clip_weights_low: Optional[float] = 1e-7,
               clip_weights_high: Optional[float] = None) -> torch.Tensor:
    """AWAC-style ``exp(beta * A)``, with optional clipping of the advantage and of the weight."""
    if clip_adv_low is not None or clip_adv_high is not None:
        adv = adv.clamp(min=clip_adv_low, max=clip_adv_high)
    w = torch.exp(beta * adv)
    if clip_weights_low is not None or clip_weights_high is not None:
        w = w.clamp(min=clip_weights_low, max=clip_weights_high)
    return w


def leaky_relu_filter(adv: torch.Tensor, beta: float = 2.0, tau: float = 1e-2, neg_slope: float = 0.05,
                      target_f0: float = 1e-2, clip_weights_low: Optional[float] = 1e-7,
                      clip_weights_high: Optional[float] = 10.0, add_binary: bool = True) -> torch.Tensor:
    """Leaky-ReLU ramp in A (hinge at ``tau``, slope 1/beta above, ``neg_slope``/beta below, f(0)=target_f0), clipped;
    ``add_binary`` then adds the binary filter's 0/1 weight (so the largest weight is ``clip_weights_high + 1``)."""
    bias = target_f0 + neg_slope * tau / beta
    w = bias + F.leaky_relu((adv - tau) / beta, negative_slope=neg_slope)
    if clip_weights_low is not None or clip_weights_high is not None:
        w = w.clamp(min=clip_weights_low, max=clip_weights_high)
    if add_binary:
        w = w + binary_filter(adv).to(w.dtype)
    return w


FILTERS = {"binary": binary_filter, "exp": exp_filter, "leaky_relu": leaky_relu_filter}


def make_filter(spec: Union[str, Callable[[torch.Tensor], torch.Tensor]], **kwargs) -> Callable:
    """Filter by name ('binary' | 'exp' | 'leaky_relu', kwargs bound) or a user callable ``f(adv) -> weights``."""
    if callable(spec):
        return partial(spec, **kwargs) if kwargs else spec
    if spec not in FILTERS:
        raise ValueError(f"unknown fbc_filter {spec!r}; expected one of {sorted(FILTERS)} or a callable")
    return partial(FILTERS[spec], **kwargs) if kwargs else FILTERS[spec]
