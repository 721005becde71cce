"""InputNorm: AMAGO's running mean / second-moment normaliser for vector observations, padding masked out."""
from __future__ import annotations

import torch
from torch import nn

from .common import debiased_ema_step
from .weight_cache import caches_trusted, note_cache_build


class InputNorm(nn.Module):
    """Normalise the last dim with bias-corrected EMA stats (`mu`, `nu` = E[x^2]), updated by `forward` in training."""

    moment_reducer = None

    def __init__(self, dim: int, beta: float = 1e-4, init_nu: float = 1.0, skip: bool = False):
        super().__init__()
        if dim < 1:
            raise ValueError(f"InputNorm dim must be >= 1, got {dim}")
        if not 0.0 < beta < 1.0:
            raise ValueError(f"InputNorm beta must be in (0, 1), got {beta}")
        self.dim, self.beta, self.skip = dim, beta, skip
        self.register_buffer("mu", torch.zeros(dim))
        self.register_buffer("nu", torch.full((dim,), float(init_nu)))
        self.register_buffer("_t", torch.ones(()))

    @property
    def sigma(self) -> torch.Tensor:
        return torch.nan_to_num(torch.sqrt(self.nu - self.mu.square() + 1e-5)).clamp(1e-3, 1e6)

    def _check(self, x: torch.Tensor, mask: torch.Tensor | None):
        if x.shape[-1] != self.dim:
            raise ValueError(f"InputNorm expected last dim {self.dim}, got shape {tuple(x.shape)}")
        if mask is not None and tuple(mask.shape) != tuple(x.shape[:-1]):
            raise ValueError(f"InputNorm mask must have shape {tuple(x.shape[:-1])} (input without its feature "
                             f"dim), got {tuple(mask.shape)}")

    @torch.no_grad()
    def update_stats(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        """EMA update from the rows of `x [..., dim]` where `mask [...]` is True (all rows if None), no host sync."""
        self._check(x, mask)
        x = x.detach().reshape(-1, self.dim).to(self.mu.dtype)
        w = (torch.ones(x.shape[0], 1, device=x.device, dtype=x.dtype) if mask is None
             else mask.reshape(-1, 1).to(x.dtype))
        x = torch.where(w > 0, x, torch.zeros((), dtype=x.dtype, device=x.device))  # NaN/inf on padding is harmless
        count, total, sq_total = w.sum().expand(self.dim), (x * w).sum(0), (x.square() * w).sum(0)
        if self.moment_reducer is not None:  # data-parallel: the moments of the global batch
            count, total, sq_total = self.moment_reducer(torch.stack([count, total, sq_total])).unbind(0)
        mean, sq_mean, t, beta_t = debiased_ema_step(count[0], total, sq_total, self._t, self.beta)
        self._t.copy_(t)
        self.mu.mul_(1.0 - beta_t).add_(beta_t * mean)
        self.nu.mul_(1.0 - beta_t).add_(beta_t * sq_mean)

    def clear_weight_cache(self) -> None:
        """Forget the acting cache (writes by another process do not bump the version counters)."""
        self.__dict__.pop("_norm_cache", None)

    def cache_sources(self) -> tuple[torch.Tensor, ...]:
        """The tensors the acting cache derives from (``modules/weight_cache.py`` watches them)."""
        return self.mu, self.nu

    def _constants(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(mu, sigma, nan_to_num(mu), sigma <= 0.01), cached inside a probed acting call (``AMAGOPolicy``) until
        `mu`/`nu` change."""
        cacheable = not torch.is_grad_enabled() and not torch.compiler.is_compiling() and caches_trusted()
        if cacheable:
            mu, nu = self.mu, self.nu
            key = (mu._version, nu._version, mu.data_ptr(), nu.data_ptr())
            cached = self.__dict__.get("_norm_cache")
            if cached is not None and cached[0] == key:
                return cached[1]
        sigma = self.sigma
        consts = (self.mu, sigma, torch.nan_to_num(self.mu), sigma <= 0.01)
        if cacheable:
            self.__dict__["_norm_cache"] = (key, consts)
            note_cache_build()
        return consts

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """(x - mu) / sigma clamped to +-1e4; features with sigma <= 0.01 (or NaN results) are only centred."""
        mu, sigma, mu_finite, small = self._constants()
        n = ((x - mu) / sigma).clamp(-1e4, 1e4)
        return torch.where(small | torch.isnan(n), x - mu_finite, n)

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Inverse of `normalize` (same centring-only fallback where sigma <= 0.01)."""
        sigma = self.sigma
        return torch.where(sigma <= 0.01, x + torch.nan_to_num(self.mu), x * sigma + self.mu)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.skip:
            return x
        if self.training:
            self.update_stats(x, mask)
        return self.normalize(x)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, beta={self.beta}, skip={self.skip}"
