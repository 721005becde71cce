"""Critic ensembles as one batched tensor op per layer (no Python loop over members).

Init follows einops' EinMix (AMAGO's critic layers): weight U(+-sqrt(3/fan_in)), bias U(+-sqrt(1/fan_in)),
drawn independently per member. That is sqrt(3) wider than the nn.Linear default, which matters for parity.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .common import activation


class EnsembleLinear(nn.Module):
    """C independent Linear layers. `shared_input=True`: x [*, d_in] -> [*, C, d_out] (same input to every
    member); otherwise x [*, C, d_in] -> [*, C, d_out]."""

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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.shared_input:
            # one [*, d_in] @ [d_in, C*d_out] matmul
            w = self.weight.permute(1, 0, 2).reshape(self.d_in, -1)
            return (x @ w).unflatten(-1, (self.ensemble_size, self.d_out)) + self.bias
        return torch.einsum("...ci,cio->...co", x, self.weight) + self.bias

    def extra_repr(self) -> str:
        return f"C={self.ensemble_size}, d_in={self.d_in}, d_out={self.d_out}, shared_input={self.shared_input}"


class EnsembleMLP(nn.Module):
    """AMAGO's `_EinMixEnsemble`: shared input -> n_layers x (EnsembleLinear -> act -> dropout) -> EnsembleLinear.
    forward(x [*, d_in]) -> [*, C, d_out]. `first_layer_partial(x_part, lo, hi)` lets callers split the first
    layer over input slices (e.g. compute the state part once and reuse it for every gamma)."""

    def __init__(self, ensemble_size: int, d_in: int, d_hidden: int, n_layers: int, d_out: int,
                 act: str = "leaky_relu", dropout: float = 0.0):
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"EnsembleMLP needs n_layers >= 1, got {n_layers}")
        self.inp = EnsembleLinear(ensemble_size, d_in, d_hidden, shared_input=True)
        self.core = nn.ModuleList(EnsembleLinear(ensemble_size, d_hidden, d_hidden) for _ in range(n_layers - 1))
        self.out = EnsembleLinear(ensemble_size, d_hidden, d_out)
        self.acts = nn.ModuleList(activation(act) for _ in range(n_layers))
        self.drop = nn.Dropout(dropout)

    def first_layer_partial(self, x: torch.Tensor, lo: int, hi: int, bias: bool) -> torch.Tensor:
        """x [*, hi-lo] times the rows lo:hi of the first layer's weight -> [*, C, d_hidden] (pre-activation)."""
        w = self.inp.weight[:, lo:hi].permute(1, 0, 2).reshape(hi - lo, -1)
        y = (x @ w).unflatten(-1, (self.inp.ensemble_size, self.inp.d_out))
        return y + self.inp.bias if bias else y

    def trunk(self, h: torch.Tensor) -> torch.Tensor:
        """From the first layer's pre-activation [*, C, d_hidden] to the output [*, C, d_out]."""
        h = self.drop(self.acts[0](h))
        for layer, act in zip(self.core, self.acts[1:]):
            h = self.drop(act(layer(h)))
        return self.out(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(self.inp(x))
