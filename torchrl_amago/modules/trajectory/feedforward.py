"""Memory-free trajectory encoders (ablations): each timestep is encoded on its own, time is ignored."""
from __future__ import annotations

import torch
from torch import nn

from ..common import Dropout, FFBlock, normalization
from ..common import activation as make_activation
from .base import TrajectoryEncoder, check_sequence_inputs


class FFTrajEncoder(TrajectoryEncoder):
    """drop(act(Linear(x))) -> n_layers x FFBlock -> Linear -> out_norm -> dropout. State: None."""

    packable = True  # per step: packed windows never meet

    def __init__(self, input_dim: int, max_seq_len: int, d_model: int = 256, d_ff: int | None = None,
                 n_layers: int = 1, dropout: float = 0.0, activation: str = "leaky_relu", norm: str | None = None,
                 out_norm: str = "layer"):
        super().__init__(input_dim, max_seq_len)
        d_ff = d_ff or 4 * d_model
        self.inp = nn.Linear(input_dim, d_model)
        self.act = make_activation(activation)
        self.drop = Dropout(dropout)
        self.blocks = nn.Sequential(*(FFBlock(d_model, d_ff, dropout, activation, norm) for _ in range(n_layers)))
        self.out = nn.Linear(d_model, d_model)
        self.out_norm = normalization(out_norm, d_model)
        self.emb_dim = d_model

    def forward(self, x: torch.Tensor, time_idx: torch.Tensor, segment: torch.Tensor | None = None) -> torch.Tensor:
        check_sequence_inputs(x, time_idx, self.input_dim)
        h = self.blocks(self.drop(self.act(self.inp(x))))
        return self.drop(self.out_norm(self.out(h)))


class IdentityTrajEncoder(TrajectoryEncoder):
    """Returns the timestep embeddings unchanged (emb_dim = input_dim). State: None."""

    packable = True

    def __init__(self, input_dim: int, max_seq_len: int):
        super().__init__(input_dim, max_seq_len)
        self.emb_dim = input_dim

    def forward(self, x: torch.Tensor, time_idx: torch.Tensor, segment: torch.Tensor | None = None) -> torch.Tensor:
        check_sequence_inputs(x, time_idx, self.input_dim)
        return x

