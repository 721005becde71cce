"""Acting caches derived from weights (σ-reparam W_hat, InputNorm constants) are reused only inside a call that first
checked those weights with a :class:`WeightProbe`: version counters miss writes through ``.data``, CUDA-graph replays
and other processes' writes into shared storage; the probe compares a few entries of each tensor instead. Elsewhere
(sequence passes, a module called on its own) the modules compute them afresh."""
from __future__ import annotations

import threading

import torch
from torch import nn


class _Local(threading.local):
    trusted = False  # per thread (collectors may act from several threads); a class default: no failed lookup


_local = _Local()
_builds = [0]  # caches (re)built in this process: a probe then checks whether its tensors were replaced


def caches_trusted() -> bool:
    """True inside a probed call (:meth:`WeightProbe.enter`): a module may reuse its acting cache."""
    return _local.trusted


def note_cache_build() -> None:
    """Called by a module that (re)builds its acting cache."""
    _builds[0] += 1


def _entries(t: torch.Tensor) -> torch.Tensor:
    """A view of 16 entries in the middle of ``t`` (all of a smaller one): one view per tensor keeps the check to a
    few microseconds."""
    flat = t.detach().view(-1)
    n = flat.numel()
    return flat if n <= 16 else flat[n // 2 - 8:n // 2 + 8]


class WeightProbe:
    """Watches the tensors that the acting caches of ``root``'s modules derive from (each caching module's
    ``cache_sources()``). ``token = probe.enter()`` drops every cache if a watched entry changed since the last call,
    then trusts the caches until ``probe.leave(token)``. A write that leaves every watched entry as it was (a few
    rows of a matrix, σ-reparam's ``gamma`` alone) goes unseen: call ``AMAGOPolicy.bump_weights_version()`` after
    one."""

    def __init__(self, root: nn.Module):
        self.root = root
        self._builds, self._sources, self._views, self._seen = -1, None, {}, {}  # per device: views, last values

    def __getstate__(self):  # a copy (pickled worker, deepcopy) re-reads its own tensors
        return {"root": self.root}

    def __setstate__(self, state):
        self.__init__(state["root"])

    def clear(self) -> None:
        """Drop the acting cache of every module under ``root``."""
        for m in self.root.modules():
            if hasattr(m, "clear_weight_cache"):
                m.clear_weight_cache()

    def enter(self) -> bool:
        """Start a probed call; returns the token for :meth:`leave` (calls inside a probed call check nothing)."""
        token = caches_trusted()
        if token or torch.compiler.is_compiling():
            return token
        stale = False
        for device, views in self._views.items():
            now, seen = torch.cat(views), self._seen.get(device)
            if seen is None or not torch.equal(now, seen):
                self._seen[device], stale = now, True  # values read before this call's caches are built
        if stale:
            self.clear()
        _local.trusted = True
        return token

    def leave(self, token: bool) -> None:
        """End the probed call; after a cache (re)build, watch the tensors anew if they were replaced."""
        if token or torch.compiler.is_compiling():
            return
        _local.trusted = False
        if self._builds == _builds[0]:
            return
        self._builds = _builds[0]
        sources = [t for m in self.root.modules() if hasattr(m, "cache_sources")
                   for t in m.cache_sources() if t is not None and t.is_contiguous()]
        ids = [(t.data_ptr(), t.numel(), t.device) for t in sources]
        if ids != self._sources:  # new tensors: unread, so the next call drops the caches built from them
            self._sources, self._views, self._seen = ids, {}, {}
            for t in sources:
                self._views.setdefault(t.device, []).append(_entries(t))
