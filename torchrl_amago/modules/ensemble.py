"""Critic ensembles as one batched tensor op per layer (member-major `[C, N, d]` inside), with einops EinMix's init."""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from .common import Dropout, activation


class EnsembleLinear(nn.Module):
    """C independent Linear layers: x [*, d_in] (`shared_input`) or [*, C, d_in] -> [*, C, d_out]."""

    def __init__(self, ensemble_size: int, d_in: int, d_out: int, shared_input: bool = False):
        super().__init__()
        if ensemble_size < 1:
            raise ValueError(f"ensemble_size must be >= 1, got {ensemble_size}")
        self.ensemble_size, self.d_in, self.d_out, self.shared_input = ensemble_size, d_in, d_out, shared_input
        self.weight = nn.Parameter(torch.empty(ensemble_size, d_in, d_out))
        self.bias = nn.Parameter(torch.empty(ensemble_size, d_out))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self):
        self.weight.uniform_(-math.sqrt(3.0 / self.d_in), math.sqrt(3.0 / self.d_in))
        self.bias.uniform_(-math.sqrt(1.0 / self.d_in), math.sqrt(1.0 / self.d_in))

    def forward_members(self, x: torch.Tensor, bias: bool = True) -> torch.Tensor:
        """x [C, N, d_in] (or [N, d_in], broadcast to every member) -> [C, N, d_out], one (bad)dbmm."""
        if x.ndim == 2:
            x = x.expand(self.ensemble_size, *x.shape)
        return torch.baddbmm(self.bias.unsqueeze(1), x, self.weight) if bias else torch.bmm(x, self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.shared_input:
            lead = x.shape[:-1]
            y = self.forward_members(x.reshape(-1, self.d_in))  # [C, N, d_out]
            return y.transpose(0, 1).reshape(*lead, self.ensemble_size, self.d_out)
        return torch.einsum("...ci,cio->...co", x, self.weight) + self.bias

    def extra_repr(self) -> str:
        return f"C={self.ensemble_size}, d_in={self.d_in}, d_out={self.d_out}, shared_input={self.shared_input}"


def _act_(act: nn.Module, h: torch.Tensor) -> torch.Tensor:
    """Apply `act`; in place for the piecewise-linear ones (h is a fresh matmul output nobody else reads)."""
    if type(act) is nn.LeakyReLU:
        return F.leaky_relu_(h, act.negative_slope)
    if type(act) is nn.ReLU:
        return F.relu_(h)
    return act(h)


class EnsembleMLP(nn.Module):
    """AMAGO's `_EinMixEnsemble`: forward(x [*, d_in]) -> [*, C, d_out]."""

    def __init__(self, ensemble_size: int, d_in: int, d_hidden: int, n_layers: int, d_out: int,
                 act: str = "leaky_relu", dropout: float = 0.0):
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"EnsembleMLP needs n_layers >= 1, got {n_layers}")
        self.inp = EnsembleLinear(ensemble_size, d_in, d_hidden, shared_input=True)
        self.core = nn.ModuleList(EnsembleLinear(ensemble_size, d_hidden, d_hidden) for _ in range(n_layers - 1))
        self.out = EnsembleLinear(ensemble_size, d_hidden, d_out)
        self.acts = nn.ModuleList(activation(act) for _ in range(n_layers))
        self.drop = Dropout(dropout)

    @torch.no_grad()
    def zero_output_(self) -> "EnsembleMLP":
        """Zero the last layer's weight and bias: every member outputs 0 for every input until it is trained."""
        self.out.weight.zero_()
        self.out.bias.zero_()
        return self

    def first_layer_partial(self, x: torch.Tensor, lo: int, hi: int, bias: bool) -> torch.Tensor:
        """x [*, hi-lo] times the rows lo:hi of the first layer's weight -> [*, C, d_hidden] (pre-activation)."""
        w = self.inp.weight[:, lo:hi].permute(1, 0, 2).reshape(hi - lo, -1)
        y = (x @ w).unflatten(-1, (self.inp.ensemble_size, self.inp.d_out))
        return y + self.inp.bias if bias else y

    def _trunk_members(self, h: torch.Tensor, own_input: bool = False) -> torch.Tensor:
        """First layer's pre-activation [C, N, d_hidden] -> output [C, N, d_out]; `own_input`: may overwrite h."""
        h = self.drop(_act_(self.acts[0], h) if own_input else self.acts[0](h))
        for layer, act in zip(self.core, self.acts[1:]):
            h = self.drop(_act_(act, layer.forward_members(h)))
        return self.out.forward_members(h)

    def trunk(self, h: torch.Tensor) -> torch.Tensor:
        """From the first layer's pre-activation [*, C, d_hidden] to the output [*, C, d_out]."""
        C = self.inp.ensemble_size
        if h.ndim < 2 or h.shape[-2] != C:
            raise ValueError(f"EnsembleMLP.trunk expects [*, C={C}, d_hidden], got {tuple(h.shape)}")
        lead = h.shape[:-2]
        hm = h.movedim(-2, 0).reshape(C, -1, h.shape[-1])  # one copy into member-major layout
        out = self._trunk_members(hm)
        return out.transpose(0, 1).reshape(*lead, C, out.shape[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        out = self._trunk_members(self.inp.forward_members(x.reshape(-1, x.shape[-1])), own_input=True)
        return out.transpose(0, 1).reshape(*lead, self.out.ensemble_size, self.out.d_out)  # view of [C, N, d_out]
