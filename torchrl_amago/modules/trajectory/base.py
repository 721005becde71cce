"""Trajectory-encoder base class (sequence mode + step mode) and its TensorDict wrapper for the loss.

Sequence mode runs a causal pass over `[B, T]` windows (training); step mode advances `N` envs by one
timestep each with a per-env state (acting). Both must agree on the same inputs.
"""
from __future__ import annotations

from typing import Any

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torch import nn

from ... import keys as K


def _check_inputs(x: torch.Tensor, time_idx: torch.Tensor, input_dim: int | None, batch_dims: int,
                  mode: str) -> torch.Tensor:
    """Shared validation of (x [*batch, D], time_idx [*batch] or [*batch, 1]); returns time_idx as int64 [*batch]."""
    names, time_names = ("[B, T, D]", "[B, T]") if batch_dims == 2 else ("[N, D]", "[N]")
    if x.ndim != batch_dims + 1:
        raise ValueError(f"{mode} mode expects x of shape {names}, got {tuple(x.shape)}")
    if input_dim is not None and x.shape[-1] != input_dim:
        raise ValueError(f"x has feature dim {x.shape[-1]} but the encoder was built for input_dim={input_dim}")
    if time_idx.ndim == batch_dims + 1 and time_idx.shape[-1] == 1:
        time_idx = time_idx.squeeze(-1)
    if time_idx.shape != x.shape[:batch_dims]:
        raise ValueError(f"time_idx must have shape {time_names} = {tuple(x.shape[:batch_dims])}, got "
                         f"{tuple(time_idx.shape)}")
    if time_idx.is_floating_point():
        raise ValueError(f"time_idx must be an integer tensor, got dtype {time_idx.dtype}")
    return time_idx.long()


def check_sequence_inputs(x: torch.Tensor, time_idx: torch.Tensor, input_dim: int | None = None) -> torch.Tensor:
    """Validate sequence-mode inputs; returns time_idx as int64 [B, T] (accepts a trailing singleton dim)."""
    return _check_inputs(x, time_idx, input_dim, 2, "sequence")


def check_step_inputs(x: torch.Tensor, time_idx: torch.Tensor, input_dim: int | None = None) -> torch.Tensor:
    """Validate step-mode inputs; returns time_idx as int64 [N] (accepts [N, 1])."""
    return _check_inputs(x, time_idx, input_dim, 1, "step")


def check_is_init(is_init: torch.Tensor, n: int) -> torch.Tensor:
    """is_init as bool [N] (accepts [N, 1])."""
    if is_init.ndim == 2 and is_init.shape[-1] == 1:
        is_init = is_init.squeeze(-1)
    if is_init.shape != (n,):
        raise ValueError(f"is_init must have shape [N] = ({n},), got {tuple(is_init.shape)}")
    return is_init.bool()


class TrajectoryEncoder(nn.Module):
    """Base: `forward(x [B,T,D], time_idx [B,T]) -> [B,T,emb_dim]` (causal) and the step-mode trio
    `init_state` / `reset_state` / `step`. Subclasses set `emb_dim`. The default step mode is stateless:
    it runs sequence mode on a length-1 sequence (correct for memory-free encoders only)."""

    emb_dim: int
    #: sequence mode can run several windows packed one after another in a row (the loss's `pack_windows`):
    #: the encoder keeps them apart given `segment` ids ``[B, T]`` (or needs nothing to: per-step encoders)
    packable: bool = False

    def __init__(self, input_dim: int, max_seq_len: int):
        super().__init__()
        if input_dim < 1:
            raise ValueError(f"input_dim must be >= 1, got {input_dim}")
        if max_seq_len < 1:
            raise ValueError(f"max_seq_len must be >= 1, got {max_seq_len}")
        self.input_dim = int(input_dim)
        self.max_seq_len = int(max_seq_len)

    def forward(self, x: torch.Tensor, time_idx: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> Any:
        return None

    def reset_state(self, state: Any, is_init: torch.Tensor) -> Any:
        return state

    def step(self, x: torch.Tensor, time_idx: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        time_idx = check_step_inputs(x, time_idx, self.input_dim)
        return self.forward(x.unsqueeze(1), time_idx.unsqueeze(1)).squeeze(1), state


class TrajectoryEncoderModule(TensorDictModuleBase):
    """Runs a `TrajectoryEncoder` in sequence mode on a `[B, T]` TensorDict (the loss uses it).

    Reads `in_key` ([B, T, D]) and `time_key` ([B, T, 1] or [B, T] int64) and writes `out_key`
    ([B, T, emb_dim]). Extra leading batch dims are flattened into B and restored."""

    def __init__(self, encoder: TrajectoryEncoder, in_key=K.TSTEP_EMB, time_key=K.TIME_IDX, out_key=K.STATE_EMB,
                 segment_key=K.SEGMENT):
        super().__init__()
        self.encoder = encoder
        self.in_key, self.time_key, self.out_key, self.segment_key = in_key, time_key, out_key, segment_key
        self.in_keys = [in_key, time_key]
        self.out_keys = [out_key]

    @property
    def emb_dim(self) -> int:
        return self.encoder.emb_dim

    @property
    def packable(self) -> bool:
        return self.encoder.packable

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        x = tensordict.get(self.in_key)
        t = tensordict.get(self.time_key)
        if x is None:
            raise KeyError(f"TrajectoryEncoderModule: key {self.in_key!r} not found in the tensordict")
        if t is None:
            raise KeyError(f"TrajectoryEncoderModule: key {self.time_key!r} not found in the tensordict")
        if x.ndim < 3:
            raise ValueError(f"{self.in_key!r} must have shape [B, T, D] (sequence mode), got {tuple(x.shape)}")
        lead = x.shape[:-1]
        if t.shape == (*lead, 1):
            t = t.squeeze(-1)
        if t.shape != lead:
            raise ValueError(f"{self.time_key!r} must have shape {tuple(lead)} or {(*lead, 1)}, got {tuple(t.shape)}")
        segment = tensordict.get(self.segment_key, None)  # windows packed into rows (the loss's pack_windows)
        kw = {} if segment is None else {"segment": segment.reshape(-1, segment.shape[-1])}
        if kw and not self.encoder.packable:
            raise ValueError(f"{type(self.encoder).__name__} cannot keep packed windows apart (packable=False); "
                             f"drop the {self.segment_key!r} key or use AMAGOLoss(pack_windows='never')")
        out = self.encoder(x.reshape(-1, *x.shape[-2:]), t.reshape(-1, t.shape[-1]), **kw)
        tensordict.set(self.out_key, out.reshape(*lead, out.shape[-1]))
        return tensordict
