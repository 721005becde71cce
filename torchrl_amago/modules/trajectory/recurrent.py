"""GRU / LSTM trajectory encoders (AMAGO's "rnn"): RNN -> Linear -> norm; a training window starts from zeros."""
from __future__ import annotations

import torch
from torch import nn

from ..common import normalization
from .base import TrajectoryEncoder, check_is_init, check_sequence_inputs, check_step_inputs


class _RNNTrajEncoder(TrajectoryEncoder):
    rnn_cls: type[nn.RNNBase]

    def __init__(self, input_dim: int, max_seq_len: int, d_hidden: int = 256, n_layers: int = 2,
                 d_output: int = 256, norm: str = "layer"):
        super().__init__(input_dim, max_seq_len)
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        self.d_hidden, self.n_layers = d_hidden, n_layers
        self.rnn = self.rnn_cls(input_dim, d_hidden, num_layers=n_layers, bias=True, batch_first=True)
        self.out = nn.Linear(d_hidden, d_output)
        self.norm = normalization(norm, d_output)
        self.emb_dim = d_output

    def forward(self, x: torch.Tensor, time_idx: torch.Tensor) -> torch.Tensor:
        check_sequence_inputs(x, time_idx, self.input_dim)
        h, _ = self.rnn(x)
        return self.norm(self.out(h))

    def init_state(self, batch_size: int, device=None):
        p = self.out.weight
        device = p.device if device is None else torch.device(device)
        parts = tuple(torch.zeros(self.n_layers, batch_size, self.d_hidden, device=device, dtype=p.dtype)
                      for _ in self._state_names)
        return parts if len(parts) > 1 else parts[0]

    def reset_state(self, state, is_init: torch.Tensor):
        parts = tuple(state) if len(self._state_names) > 1 else (state,)
        keep = (~check_is_init(is_init, parts[0].shape[1]).to(parts[0].device))[None, :, None].to(parts[0].dtype)
        parts = tuple(p * keep for p in parts)
        return parts if len(parts) > 1 else parts[0]

    def step(self, x: torch.Tensor, time_idx: torch.Tensor, state):
        check_step_inputs(x, time_idx, self.input_dim)
        h, state = self.rnn(x.unsqueeze(1), state)
        return self.norm(self.out(h.squeeze(1))), state

    # per env, the hidden state(s) as [n_layers, d_hidden] (TorchRL's LSTMModule / GRUModule layout)
    _state_names: tuple[str, ...]

    def state_shapes(self) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
        return {name: ((self.n_layers, self.d_hidden), self.out.weight.dtype) for name in self._state_names}

    def state_to_tensors(self, state) -> dict[str, torch.Tensor]:
        parts = state if isinstance(state, tuple) else (state,)
        return {name: p.transpose(0, 1) for name, p in zip(self._state_names, parts)}

    def state_from_tensors(self, tensors: dict[str, torch.Tensor]):
        parts = tuple(tensors[name].transpose(0, 1).contiguous() for name in self._state_names)
        return parts if len(parts) > 1 else parts[0]


class GRUTrajEncoder(_RNNTrajEncoder):
    """nn.GRU(d_hidden, n_layers) -> Linear(d_hidden, d_output) -> LayerNorm. State: h [n_layers, N, d_hidden]."""

    rnn_cls = nn.GRU
    _state_names = ("h",)


class LSTMTrajEncoder(_RNNTrajEncoder):
    """nn.LSTM variant. State: (h, c), each [n_layers, N, d_hidden]."""

    rnn_cls = nn.LSTM
    _state_names = ("h", "c")
