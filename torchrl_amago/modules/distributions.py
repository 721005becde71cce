"""Policy output distributions (AMAGO's `policy_dists.py`): parameter-free `*Output` factories, `input_dimension(A)`
outputs per gamma and `__call__(params [*, G, P])` -> a Distribution with batch `[*, G]`."""
from __future__ import annotations

import math

import torch
from torch import distributions as D
from torch.nn import functional as F


#: The original's discrete policy clip (low, high) on the softmax probabilities.
DEFAULT_DISCRETE_CLIP = (1e-3, 0.99)


class ClampedCategorical(D.Categorical):
    """Categorical over clamped-and-renormalised softmax probs. `.mode` is the argmax index."""

    @property
    def mode(self) -> torch.Tensor:
        return self.probs.argmax(-1)


class _PolicyOutput:
    """Base of the `*Output` factories: `input_dimension(A)` = `params_per_action * A` actor outputs per gamma."""

    params_per_action = 1
    actions_differentiable = True  # discrete: DPG goes through `.probs`, not rsample

    @classmethod
    def input_dimension(cls, action_dim: int) -> int:
        return cls.params_per_action * action_dim


class DiscreteOutput(_PolicyOutput):
    """softmax -> clamp to [clip_low, clip_high] -> divide by the (detached) sum (clamped probs get no gradient)."""

    def __init__(self, clip_low: float = DEFAULT_DISCRETE_CLIP[0], clip_high: float = DEFAULT_DISCRETE_CLIP[1]):
        if not 0.0 <= clip_low < clip_high <= 1.0:
            raise ValueError(f"discrete prob clips need 0 <= clip_low < clip_high <= 1, got ({clip_low}, {clip_high})")
        self.clip_low, self.clip_high = clip_low, clip_high

    def __call__(self, params: torch.Tensor) -> ClampedCategorical:
        probs = torch.softmax(params, dim=-1).clamp(self.clip_low, self.clip_high)
        probs = probs / probs.sum(-1, keepdim=True).detach()
        return ClampedCategorical(probs=probs, validate_args=False)


class ClampedTanhTransform(D.transforms.TanhTransform):
    """tanh whose inverse clamps y to +-`clip` before atanh; log_prob of an rsample'd action uses the cached value."""

    def __init__(self, clip: float = 0.99, cache_size: int = 1):
        super().__init__(cache_size=cache_size)
        self.clip = clip

    def _inverse(self, y):
        return torch.atanh(y.clamp(-self.clip, self.clip))

    def log_abs_det_jacobian(self, x, y):
        return 2.0 * (math.log(2.0) - x - F.softplus(-2.0 * x))


def tanh_bounded_positive(raw: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """log-space squash: log(out) = log(low) + (log(high) - log(low)) * (tanh(raw) + 1) / 2, out in [low, high]."""
    lo, hi = math.log(low), math.log(high)
    return torch.exp(lo + 0.5 * (hi - lo) * (torch.tanh(raw) + 1.0))


# Not torchrl.modules.TanhNormal: its log_prob differs near the bounds, where AMAGO clips the inverse tanh.
class TanhGaussian(D.Independent):
    """tanh(Normal(mu, std)) over the last (action) dim; `.mean` = tanh(mu); `entropy()` is a one-sample estimate."""

    def __init__(self, mu: torch.Tensor, std: torch.Tensor, clip: float = 0.99):
        base = D.TransformedDistribution(D.Normal(mu, std, validate_args=False), [ClampedTanhTransform(clip)],
                                         validate_args=False)
        super().__init__(base, 1, validate_args=False)
        self.loc, self.scale = mu, std

    @property
    def mean(self) -> torch.Tensor:
        return torch.tanh(self.loc)

    mode = mean

    def entropy(self) -> torch.Tensor:
        return -self.log_prob(self.rsample())


class TanhGaussianOutput(_PolicyOutput):
    """params [*, G, 2A] = [mu ; raw_std]; std = tanh_bounded_positive(raw, std_low, std_high); mu unbounded."""

    params_per_action = 2

    def __init__(self, std_low: float = math.exp(-5.0), std_high: float = math.exp(2.0), clip: float = 0.99):
        if not 0.0 < std_low < std_high:
            raise ValueError(f"TanhGaussian needs 0 < std_low < std_high, got ({std_low}, {std_high})")
        self.std_low, self.std_high, self.clip = std_low, std_high, clip

    def __call__(self, params: torch.Tensor) -> TanhGaussian:
        mu, raw = params.chunk(2, dim=-1)
        return TanhGaussian(mu, tanh_bounded_positive(raw, self.std_low, self.std_high), self.clip)


class ScaledBeta(D.Independent):
    """Beta(alpha, beta) mapped from [0, 1] to [-1, 1] (y = 2x - 1); log_prob clamps y to +-`clip`."""

    def __init__(self, alpha: torch.Tensor, beta: torch.Tensor, clip: float = 0.99):
        self.beta_dist = D.Beta(alpha, beta, validate_args=False)
        base = D.TransformedDistribution(self.beta_dist, [D.transforms.AffineTransform(-1.0, 2.0)],
                                         validate_args=False)
        super().__init__(base, 1, validate_args=False)
        self.clip = clip

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return super().log_prob(value.clamp(-self.clip, self.clip))

    @property
    def mean(self) -> torch.Tensor:
        return 2.0 * self.beta_dist.mean - 1.0

    @property
    def mode(self) -> torch.Tensor:  # alpha, beta > 1: unimodal
        a, b = self.beta_dist.concentration1, self.beta_dist.concentration0
        return 2.0 * (a - 1.0) / (a + b - 2.0) - 1.0

    def entropy(self) -> torch.Tensor:
        return (self.beta_dist.entropy() + math.log(2.0)).sum(-1)


class BetaOutput(_PolicyOutput):
    """params [*, G, 2A] = [alpha_raw ; beta_raw]; alpha, beta = softplus(raw) + low (> 1 keeps it unimodal)."""

    params_per_action = 2

    def __init__(self, low: float = 1.0001, high: float | None = None, clip: float = 0.99):
        self.low, self.high, self.clip = low, high, clip

    def _positive(self, raw):
        out = F.softplus(raw) + self.low
        return out if self.high is None else out.clamp(max=self.high)

    def __call__(self, params: torch.Tensor) -> ScaledBeta:
        a_raw, b_raw = params.chunk(2, dim=-1)
        return ScaledBeta(self._positive(a_raw), self._positive(b_raw), self.clip)


class MultiBinary(D.Independent):
    """Independent Bernoulli(logits) per dim; log_prob and entropy averaged over dims; `.mode` thresholds at 0.5."""

    def __init__(self, logits: torch.Tensor):
        super().__init__(D.Bernoulli(logits=logits, validate_args=False), 1, validate_args=False)
        self._dim = logits.shape[-1]

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return super().log_prob(value.to(self.base_dist.logits.dtype)) / self._dim

    def entropy(self) -> torch.Tensor:
        return super().entropy() / self._dim

    @property
    def mode(self) -> torch.Tensor:
        return (self.base_dist.logits > 0).to(self.base_dist.logits.dtype)


class MultiBinaryOutput(_PolicyOutput):
    """`params [*, G, A]` logits -> :class:`MultiBinary` (actions are 0/1 floats)."""

    actions_differentiable = False

    def __call__(self, params: torch.Tensor) -> MultiBinary:
        return MultiBinary(params)


CONTINUOUS_OUTPUTS = {"tanh_gaussian": TanhGaussianOutput, "beta": BetaOutput}


def discrete_clip_of(actor_head) -> tuple[float, float]:
    """The (low, high) probability clip of an actor's `DiscreteOutput` (else `DEFAULT_DISCRETE_CLIP`)."""
    out = getattr(actor_head, "policy_output", None)
    return (float(out.clip_low), float(out.clip_high)) if isinstance(out, DiscreteOutput) else DEFAULT_DISCRETE_CLIP
