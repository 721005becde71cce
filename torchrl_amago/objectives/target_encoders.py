"""The encoders' target copy (``AMAGOLoss(target_encoders=True)``) and ``AMAGOSoftUpdate``, which moves it. With
the copy, every discount's TD targets read s_{t+1} from a gradient-free pass (eval mode) of Polyak-averaged encoders,
``loss.target_backbone_params``, which TorchRL's ``SoftUpdate`` pairs with ``loss.backbone_params``."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable

import torch
from tensordict import TensorDict, TensorDictBase
from torch import nn
from torchrl.objectives import SoftUpdate

__all__ = ["AMAGOSoftUpdate", "DEFAULT_BACKBONE_TAU", "encoder_params", "swapped_parameters", "target_states"]

#: Polyak rate of the encoders' target copy (``AMAGOSoftUpdate(backbone_tau=...)``)
DEFAULT_BACKBONE_TAU = 0.01
#: the encoders the copy holds, by their attribute names on the loss
ENCODERS = ("timestep_encoder", "trajectory_encoder")
BACKBONE = "backbone_params"  # the source whose target copy is AMAGOLoss.target_backbone_params


@contextmanager
def swapped_parameters(module: nn.Module, params: TensorDictBase):
    """Within the block, ``module``'s parameters named by the nested keys of ``params`` are those tensors (no copy;
    unlike ``TensorDict.to_module``, ``params`` is left untouched)."""
    saved = []
    try:
        for key, value in params.items(True, True):
            *path, leaf = key
            owner = module.get_submodule(".".join(path))
            saved.append((owner, leaf, owner._parameters[leaf]))
            owner._parameters[leaf] = value
        yield
    finally:
        for owner, leaf, old in reversed(saved):
            owner._parameters[leaf] = old


def encoder_params(loss: nn.Module) -> TensorDict:
    """The encoders' parameters (the tensors themselves) as ``{"timestep_encoder": ..., "trajectory_encoder": ...}``."""
    return TensorDict({name: TensorDict(dict(getattr(loss, name).named_parameters()), []).unflatten_keys(".")
                       for name in ENCODERS}, [])


@torch.no_grad()
def target_states(loss: nn.Module, encode: Callable[[], torch.Tensor]) -> torch.Tensor:
    """s_{t+1} ``[B, T, D]``: the encoder pass ``encode()`` on ``loss.target_backbone_params``, in eval mode."""
    modules = [getattr(loss, name) for name in ENCODERS]
    modes = [m.training for m in modules]
    try:
        with swapped_parameters(loss, loss.target_backbone_params):
            for m in modules:
                m.eval()
            emb = encode()
    finally:
        for m, mode in zip(modules, modes):
            m.train(mode)
    return emb[:, 1:]


class AMAGOSoftUpdate(SoftUpdate):
    """Use it as ``SoftUpdate``: ``tau`` moves the heads' target copies, ``backbone_tau`` (None: tau) the encoders'."""

    def __init__(self, loss_module, *, eps: float | None = None, tau: float | None = None,
                 backbone_tau: float | None = DEFAULT_BACKBONE_TAU):
        super().__init__(loss_module, eps=eps, tau=tau)
        if backbone_tau is not None and not 0.0 < backbone_tau <= 1.0:
            raise ValueError(f"backbone_tau={backbone_tau}: must be in (0, 1] (or None: the heads' tau)")
        self.backbone_tau = backbone_tau

    def _step(self, p_source, p_target) -> None:
        """TorchRL's `step()` calls this per source; the encoders' source moves at `backbone_tau`."""
        if self.backbone_tau is not None and p_source is self._sources.get(BACKBONE, None):
            p_target.data.lerp_(p_source.data, self.backbone_tau)
        else:
            super()._step(p_source, p_target)
