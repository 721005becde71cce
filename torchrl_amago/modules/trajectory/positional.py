"""Positional embeddings indexed by the absolute episode step `time_idx` (never by window or cache position)."""
from __future__ import annotations

import math

import torch
from torch import nn


class FixedPosEmb(nn.Module):
    """Sinusoidal: emb[..., 0::2] = sin(t c_i), emb[..., 1::2] = cos(t c_i), c_i = exp(-2i ln(1e4) / d)."""

    def __init__(self, d_model: int):
        super().__init__()
        if d_model % 2:
            raise ValueError(f"fixed positional embedding needs an even d_model, got {d_model}")
        freqs = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
        self.register_buffer("freqs", freqs, persistent=False)
        self.d_model = d_model

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        ang = t.float().unsqueeze(-1) * self.freqs
        return torch.stack([ang.sin(), ang.cos()], dim=-1).flatten(-2)


class LearnablePosEmb(nn.Module):
    """nn.Embedding(max_time_idx, d_model); a time_idx outside [0, max_time_idx) is a ValueError."""

    def __init__(self, d_model: int, max_time_idx: int | None):
        super().__init__()
        if max_time_idx is None:
            raise ValueError("pos_emb='learnable' needs max_time_idx (the largest episode step + 1); pass "
                             "max_time_idx=... to the Transformer encoder")
        if max_time_idx < 1:
            raise ValueError(f"max_time_idx must be >= 1, got {max_time_idx}")
        self.max_time_idx = int(max_time_idx)
        self.emb = nn.Embedding(self.max_time_idx, d_model)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        if t.numel():
            lo, hi = int(t.min()), int(t.max())
            if lo < 0 or hi >= self.max_time_idx:
                raise ValueError(f"time_idx out of range for pos_emb='learnable': saw values in [{lo}, {hi}] but "
                                 f"max_time_idx={self.max_time_idx} allows [0, {self.max_time_idx - 1}]; "
                                 "raise max_time_idx or use pos_emb='fixed'/'rope'")
        return self.emb(t.long())


class RotaryPosEmb(nn.Module):
    """RoPE with the half-split (Llama) convention: [x1 cos - x2 sin, x1 sin + x2 cos] on q and k."""

    def __init__(self, head_dim: int, base: float = 1e4):
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"rope needs an even head_dim, got {head_dim}")
        inv = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        self.register_buffer("inv_freq", inv, persistent=False)

    def cos_sin(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """t [...] -> cos, sin [..., 1, head_dim/2] (broadcast over heads)."""
        ang = (t.float().unsqueeze(-1) * self.inv_freq).unsqueeze(-2)
        return ang.cos(), ang.sin()

    @staticmethod
    def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """x [..., H, Dh] rotated by cos/sin [..., 1, Dh/2]."""
        x1, x2 = x.float().chunk(2, dim=-1)
        return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).to(x.dtype)
