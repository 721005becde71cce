"""Small building blocks shared by the encoders and heads: activations, norms, MLP, FF residual block, symlog."""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def symlog(x: torch.Tensor) -> torch.Tensor:
    """sign(x) * log(1 + |x|), elementwise (the two-hot critic's value scale)."""
    return torch.sign(x) * torch.log1p(x.abs())


def symexp(x: torch.Tensor) -> torch.Tensor:
    """sign(x) * (exp(|x|) - 1), the inverse of `symlog`."""
    return torch.sign(x) * torch.expm1(x.abs())


class SlowAdaptiveRational(nn.Module):
    """Learnable rational activation (5th/4th order), initialised close to leaky-ReLU (the original's 'adaptive')."""

    def __init__(self):
        super().__init__()
        # least-squares fit of leaky_relu(0.01) on [-3, 3]
        x = torch.linspace(-3, 3, 601, dtype=torch.float64)
        y = F.leaky_relu(x, 0.01)
        num = torch.stack([x**i for i in range(6)], -1)
        coef = torch.linalg.lstsq(num, y.unsqueeze(-1)).solution.squeeze(-1)
        self.num = nn.Parameter(coef.float())
        self.den = nn.Parameter(torch.zeros(4))

    def forward(self, x):
        p = sum(self.num[i] * x**i for i in range(6))
        q = 1 + sum((self.den[j - 1] * x**j).abs() for j in range(1, 5))
        return p / q


class Dropout(nn.Dropout):
    """`nn.Dropout`; on bf16 / fp16 activations in training the mask comes from 16-bit random integers, four per
    64-bit draw of the generator (drop probability round(p * 2^16) / 2^16, kept values scaled to an unbiased mean):
    ~4x cheaper than `bernoulli_` on a CPU. fp32 activations draw the same masks as `nn.Dropout`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and 0 < self.p < 1 and x.dtype in (torch.bfloat16, torch.float16)):
            return super().forward(x)
        n, cut = x.numel(), round(self.p * 65536)
        bits = torch.empty((n + 3) // 4, dtype=torch.int64, device=x.device).random_(-2**63, 2**63 - 1)
        keep = bits.view(torch.int16)[:n].view(x.shape) >= cut - 32768
        return x * keep.to(x.dtype).mul_(65536 / (65536 - cut))


ACTIVATIONS = {"leaky_relu": lambda: nn.LeakyReLU(0.01), "relu": nn.ReLU, "gelu": nn.GELU, "mish": nn.Mish,
               "adaptive": SlowAdaptiveRational}


def debiased_ema_step(count: torch.Tensor, total: torch.Tensor, sq_total: torch.Tensor, t: torch.Tensor,
                      beta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One bias-corrected EMA step of a mean and mean square from a batch's moments -> (mean, sq_mean, t, beta_t)."""
    has = count > 0
    mean = total / count.clamp(min=1.0)
    sq_mean = sq_total / count.clamp(min=1.0)
    t = t + has.to(t.dtype)
    # beta / (1 - (1 - beta)^t), written with expm1/log1p: the direct form loses ~3 digits in float32
    beta_t = beta / -torch.expm1(t * math.log1p(-beta))
    return mean, sq_mean, t, torch.where(has, beta_t, torch.zeros_like(beta_t))


def activation(name: str, inplace: bool = False) -> nn.Module:
    """Activation module by name (leaky_relu is AMAGO's default everywhere); `inplace`: the piecewise-linear ones
    overwrite their input (for a fresh layer output nothing else reads: one buffer fewer per training step)."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}")
    act = ACTIVATIONS[name]()
    if isinstance(act, (nn.LeakyReLU, nn.ReLU)):
        act.inplace = inplace
    return act


class RMSNorm(nn.Module):
    def __init__(self, d: int, eps: float = 1e-5):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        return self.scale * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)


class UnitBall(nn.Module):
    def __init__(self, detach: bool = False):
        super().__init__()
        self.detach = detach

    def forward(self, x):
        n = x.norm(dim=-1, keepdim=True) + 1e-5
        return x / (n.detach() if self.detach else n)


class Hypersphere(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.scale = math.sqrt(d)

    def forward(self, x):
        return F.normalize(x, dim=-1) * self.scale


class SimNorm(nn.Module):
    """Softmax inside groups of 8 features."""

    def __init__(self, group: int = 8):
        super().__init__()
        self.group = group

    def forward(self, x):
        shp = x.shape
        return F.softmax(x.unflatten(-1, (shp[-1] // self.group, self.group)), -1).reshape(shp)


def normalization(method: str | None, d: int) -> nn.Module:
    """Last-dim norm by name: None/'none', 'layer', 'rmsnorm', 'unitball'(-detach), 'hypersphere', 'simnorm'."""
    if method is None or method == "none":
        return nn.Identity()
    table = {"layer": lambda: nn.LayerNorm(d), "rmsnorm": lambda: RMSNorm(d), "unitball": lambda: UnitBall(False),
             "unitball-detach": lambda: UnitBall(True), "hypersphere": lambda: Hypersphere(d), "simnorm": SimNorm}
    if method not in table:
        raise ValueError(f"unknown normalization {method!r}; expected None or one of {sorted(table)}")
    return table[method]()


class MLP(nn.Module):
    """`n_layers` hidden layers (Linear -> norm -> act -> dropout) then an output Linear (n_layers + 1 Linears)."""

    def __init__(self, d_inp: int, d_hidden: int, n_layers: int, d_output: int, act: str = "leaky_relu",
                 norm: str | None = None, dropout: float = 0.0):
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"MLP needs n_layers >= 1, got {n_layers}")
        layers: list[nn.Module] = []
        for i in range(n_layers):
            norm_i = normalization(norm, d_hidden)  # without one, the activation overwrites the Linear's fresh output
            layers += [nn.Linear(d_hidden if i else d_inp, d_hidden), norm_i,
                       activation(act, inplace=isinstance(norm_i, nn.Identity)), Dropout(dropout)]
        layers.append(nn.Linear(d_hidden, d_output))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


class FFBlock(nn.Module):
    """AMAGO's residual FF block: x + drop(act(norm2(ff2(drop(act(norm1(ff1(x)))))))) (activation after both)."""

    def __init__(self, d_model: int, d_ff: int, dropout: float = 0.0, act: str = "leaky_relu", norm: str | None = None):
        super().__init__()
        self.ff1, self.ff2 = nn.Linear(d_model, d_ff), nn.Linear(d_ff, d_model)
        self.norm1, self.norm2 = normalization(norm, d_ff), normalization(norm, d_model)
        self.act1, self.act2 = activation(act), activation(act)
        self.drop = Dropout(dropout)

    def forward(self, x):
        h = self.drop(self.act1(self.norm1(self.ff1(x))))
        h = self.drop(self.act2(self.norm2(self.ff2(h))))
        return x + h
