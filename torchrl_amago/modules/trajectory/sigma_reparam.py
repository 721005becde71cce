"""σ-reparam linear layer (Zhai et al. 2023), as AMAGO's Transformer uses it to keep attention logits tame."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..weight_cache import caches_trusted, note_cache_build


class SigmaReparam(nn.Linear):
    """`W_hat = gamma / sigma(W) * W`, sigma = u^T W v by one power-iteration step per training forward."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None, dtype=None):
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        nn.init.trunc_normal_(self.weight, std=0.02)
        with torch.no_grad():
            u, _, vh = torch.linalg.svd(self.weight.detach().float(), full_matrices=False)
        self.register_buffer("u", u[:, 0].to(self.weight.dtype).clone())
        self.register_buffer("v", vh[0].to(self.weight.dtype).clone())
        self.gamma = nn.Parameter(torch.ones(1, device=device, dtype=dtype))
        self._cached: tuple | None = None  # (key, W_hat) for eval + no-grad calls (acting)

    def power_iteration_(self) -> None:
        """One in-place power-iteration step on the u, v buffers (F.normalize's numbers)."""
        w = self.weight.detach()
        with torch.no_grad(), torch.autocast(w.device.type, enabled=False):
            u = torch.mv(w, self.v, out=self.u)
            u.div_(torch.linalg.vector_norm(u).clamp_min_(1e-12))
            v = torch.mv(w.t(), u, out=self.v)
            v.div_(torch.linalg.vector_norm(v).clamp_min_(1e-12))

    def sigma(self) -> torch.Tensor:
        # in the weight's own precision even under autocast; autograd keeps copies of u, v (as torch's spectral_norm
        # does): a later training call in the same graph updates the buffers in place
        w, u, v = self.weight, self.u.detach(), self.v.detach()
        if torch.is_grad_enabled():
            u, v = u.clone(), v.clone()
        with torch.autocast(w.device.type, enabled=False):
            return torch.dot(u.to(w.dtype), torch.mv(w, v.to(w.dtype)))

    def effective_weight(self) -> torch.Tensor:
        return self.gamma / self.sigma() * self.weight

    def _cache_key(self) -> tuple:
        # runs per linear per env step: read the dicts directly (module __getattr__ is a Python call per name)
        p, b = self._parameters, self._buffers
        try:
            w, g, u, v = p["weight"], p["gamma"], b["u"], b["v"]
        except KeyError:  # TorchRL's functional calls (`params.to_module`) may set them as plain attributes
            w, g, u, v = self.weight, self.gamma, self.u, self.v
        return (w._version, g._version, u._version, v._version, w.data_ptr(), g.data_ptr(), u.data_ptr(),
                v.data_ptr())

    def clear_weight_cache(self) -> None:
        """Forget W_hat (the cache key cannot see weights written by another process)."""
        self._cached = None

    def cache_sources(self) -> tuple[torch.Tensor, ...]:
        """The tensor whose writes ``modules/weight_cache.py`` watches for W_hat (a write of new weights moves it;
        ``gamma`` alone is left to the version counters)."""
        return (self.weight,)

    def cached_weight(self) -> torch.Tensor:
        """W_hat for eval + no-grad calls: inside a probed acting call (``AMAGOPolicy``), reused until a parameter or
        buffer changes (version counters, the probe); elsewhere computed afresh."""
        if not caches_trusted():
            return self.effective_weight()
        key = self._cache_key()
        if self._cached is None or self._cached[0] != key:
            self._cached = (key, self.effective_weight())
            note_cache_build()
        return self._cached[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.power_iteration_()
        elif not torch.is_grad_enabled() and not torch.compiler.is_compiling():
            return F.linear(x, self.cached_weight(), self.bias)
        return F.linear(x, self.effective_weight(), self.bias)
