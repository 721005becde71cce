"""`AMAGOSoftUpdate`: TorchRL's `SoftUpdate` with its own Polyak rate for the encoders' target copy.

With ``AMAGOLoss(target_backbone=True)`` the TD targets read s_{t+1} from Polyak-averaged copies of the encoders
(``target_backbone_params``). At the heads' rate (``DEFAULT_TAU`` = 0.003, a lag of ~330 updates) that copy holds
back what the encoders learn, and dense-reward tasks start to learn several times later; at
``DEFAULT_BACKBONE_TAU`` = 0.01 (a lag of ~100 updates) they learn as fast as without it, and the copy still
keeps the targets from following every move of the online encoders (docs/api/objectives.md, "Options beyond the
original").
"""
from __future__ import annotations

from torchrl.objectives import SoftUpdate

#: Polyak rate of the encoders' target copy (``AMAGOSoftUpdate(backbone_tau=...)``, ``--target_backbone_tau``)
DEFAULT_BACKBONE_TAU = 0.01

BACKBONE = "backbone_params"  # the source whose target copy is AMAGOLoss.target_backbone_params


class AMAGOSoftUpdate(SoftUpdate):
    """``SoftUpdate(loss, tau=...)`` for the heads' target copies, ``backbone_tau`` for the encoders' one.

    ``backbone_tau=None`` moves every copy at ``tau`` (then it is TorchRL's ``SoftUpdate``). A loss without a
    target backbone has nothing for ``backbone_tau`` to move. Use it wherever ``SoftUpdate`` goes (your loop's
    ``updater.step()`` after the optimizer step, ``TargetNetUpdaterHook`` in ``torchrl.trainers.Trainer``)."""

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
