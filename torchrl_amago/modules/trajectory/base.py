"""Trajectory-encoder base class: sequence mode (training) and step mode (acting) agree on the same inputs."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn


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
    """Base: `forward(x [B,T,D], time_idx [B,T]) -> [B,T,emb_dim]` (causal) and the step-mode trio `init_state` /
    `reset_state` / `step`. Subclasses set `emb_dim`; the default step mode is stateless (memory-free encoders)."""

    emb_dim: int
    #: sequence mode keeps windows packed in one row apart given `segment` ids ``[B, T]``
    packable: bool = False

    def __init__(self, input_dim: int, max_seq_len: int):
        super().__init__()
        if input_dim < 1:
            raise ValueError(f"input_dim must be >= 1, got {input_dim}")
        if max_seq_len < 1:
            raise ValueError(f"max_seq_len must be >= 1, got {max_seq_len}")
        self.input_dim, self.max_seq_len = int(input_dim), int(max_seq_len)

    def forward(self, x: torch.Tensor, time_idx: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> Any:
        return None

    def reset_state(self, state: Any, is_init: torch.Tensor) -> Any:
        return state

    def step(self, x: torch.Tensor, time_idx: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        time_idx = check_step_inputs(x, time_idx, self.input_dim)
        return self.forward(x.unsqueeze(1), time_idx.unsqueeze(1)).squeeze(1), state

    # the step-mode state as named per-env tensors (TensorDict entries; `TrajectoryEncoderModule`)
    def _stateless(self) -> bool:
        return type(self).init_state is TrajectoryEncoder.init_state

    def _empty_state_or_raise(self, what: str, empty):
        """`empty` for a stateless encoder, else raise: the subclass must implement `what`."""
        if self._stateless():
            return empty
        raise NotImplementedError(
            f"{type(self).__name__} keeps a step-mode state but does not say how to store it in a TensorDict "
            f"({what} is missing): implement `state_shapes`, `state_to_tensors` and `state_from_tensors` to act with "
            "TrajectoryEncoderModule / AMAGOPolicy(tensordict_state=True), or act with AMAGOPolicy's own state")

    def state_shapes(self) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
        """``{name: (per-env shape, dtype)}`` of the step-mode state as TensorDict entries; all zeros = empty memory."""
        return self._empty_state_or_raise("state_shapes", {})

    def state_to_tensors(self, state: Any) -> dict[str, torch.Tensor]:
        """The state of N envs as ``{name: [N, *shape]}`` (the names and shapes of `state_shapes`)."""
        return self._empty_state_or_raise("state_to_tensors", {})

    def state_from_tensors(self, tensors: dict[str, torch.Tensor]) -> Any:
        """Inverse of `state_to_tensors`. May return views of ``tensors`` that `step` then writes in place."""
        return self._empty_state_or_raise("state_from_tensors", None)
