"""Mamba trajectory encoder over `mamba_ssm` (CUDA only; imported lazily)."""
from __future__ import annotations

import torch
from torch import nn

from ..._optional import require
from ..common import normalization
from .base import TrajectoryEncoder, check_is_init, check_sequence_inputs, check_step_inputs


class MambaTrajEncoder(TrajectoryEncoder):
    """Linear -> n_layers x [x + Mamba(norm(x))] -> norm (time ignored); step mode uses `Mamba.step`."""

    def __init__(self, input_dim: int, max_seq_len: int, d_model: int = 256, d_state: int = 16, d_conv: int = 4,
                 expand: int = 2, n_layers: int = 3, norm: str = "layer"):
        super().__init__(input_dim, max_seq_len)
        mamba_ssm = require("mamba_ssm", "mamba-ssm", "MambaTrajEncoder")
        self.inp = nn.Linear(input_dim, d_model)
        self.blocks = nn.ModuleList(mamba_ssm.Mamba(d_model=d_model, d_state=d_state, d_conv=d_conv, expand=expand)
                                    for _ in range(n_layers))
        self.norms = nn.ModuleList(normalization(norm, d_model) for _ in range(n_layers))
        self.out_norm = normalization(norm, d_model)
        self.emb_dim = d_model

    def forward(self, x: torch.Tensor, time_idx: torch.Tensor) -> torch.Tensor:
        check_sequence_inputs(x, time_idx, self.input_dim)
        h = self.inp(x)
        for norm, block in zip(self.norms, self.blocks):
            h = h + block(norm(h))
        return self.out_norm(h)

    def init_state(self, batch_size: int, device=None):
        dtype = self.inp.weight.dtype
        states = [block.allocate_inference_cache(batch_size, max_seqlen=self.max_seq_len, dtype=dtype)
                  for block in self.blocks]
        if device is not None:
            states = [(c.to(device), s.to(device)) for c, s in states]
        for c, s in states:
            c.zero_()
            s.zero_()
        return states

    def reset_state(self, state, is_init: torch.Tensor):
        is_init = check_is_init(is_init, state[0][0].shape[0]).to(state[0][0].device)
        for conv, ssm in state:
            conv[is_init] = 0
            ssm[is_init] = 0
        return state

    def state_shapes(self) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
        """Per env and block i: ``conv_i`` ``[d_inner, d_conv]`` and ``ssm_i`` ``[d_inner, d_state]``."""
        dtype, out = self.inp.weight.dtype, {}
        for i, block in enumerate(self.blocks):
            out[f"conv_{i}"] = ((block.d_inner, block.d_conv), dtype)
            out[f"ssm_{i}"] = ((block.d_inner, block.d_state), dtype)
        return out

    def state_to_tensors(self, state) -> dict[str, torch.Tensor]:
        return {k: v for i, (conv, ssm) in enumerate(state) for k, v in ((f"conv_{i}", conv), (f"ssm_{i}", ssm))}

    def state_from_tensors(self, tensors: dict[str, torch.Tensor]):
        return [(tensors[f"conv_{i}"], tensors[f"ssm_{i}"]) for i in range(len(self.blocks))]

    def step(self, x: torch.Tensor, time_idx: torch.Tensor, state):
        check_step_inputs(x, time_idx, self.input_dim)
        h = self.inp(x).unsqueeze(1)
        for norm, block, (conv, ssm) in zip(self.norms, self.blocks, state):
            out, _, _ = block.step(norm(h), conv, ssm)  # updates conv/ssm in place
            h = h + out
        return self.out_norm(h).squeeze(1), state
