"""Our memory inside TorchRL's own losses (``DQNLoss``, ``DiscreteSACLoss``, ...): the state embeddings of a
``[B, T]`` window from ONE sequence-mode pass over its T+1 observations, written where those losses read them
(the root entry: position t of the pass, the ``"next"`` entry: position t+1; docs/swapping.md)."""
from __future__ import annotations

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from tensordict.utils import NestedKey, unravel_key
from torch import nn

from .. import keys as K
from ..modules.trajectory.adapters import as_sequence_module, encoder_emb_dim
from .batch import as_bt, cut_at_trial_starts, init_sequence, refuse_multistep, t_plus_one_sequence

__all__ = ["MemoryEmbedding"]


class MemoryEmbedding(TensorDictModuleBase):
    """Timestep encoder + trajectory encoder (any memory ``AMAGOLoss`` accepts) over a window's T+1 sequence, for a
    TorchRL loss; train its parameters with the loss's, and set the loss's ``loss_mask_key`` to ``mask_key``.

    Keys in (``[B, T]``): the timestep encoder's ``in_keys`` and the memory's ``time_key``, at the root and under
    ``"next"``; ``mask_key`` (False on padding); optionally ``init_key`` at the root and under ``"next"`` (a row that
    crosses a trial start is run as one window per trial, ``cut_at_trial_starts``). Keys out: ``out_key``
    ``[B, T, D]`` (positions 0..T-1, with grad) and ``("next", out_key)`` (positions 1..T, detached with
    ``detach_next``); 0 on padding when a row was cut."""

    def __init__(self, timestep_encoder: nn.Module, trajectory_encoder: nn.Module, *, mask_key: NestedKey = K.MASK,
                 init_key: NestedKey = K.IS_INIT, detach_next: bool = True):
        super().__init__()
        tin = list(getattr(timestep_encoder, "in_keys", None) or [])
        tout = list(getattr(timestep_encoder, "out_keys", None) or [])
        if not tin or len(tout) != 1:
            raise ValueError("timestep_encoder must be a TensorDict module with in_keys and one out_key "
                             "(e.g. MLPTimestepEncoder)")
        self.timestep_encoder = timestep_encoder
        self.trajectory_encoder = as_sequence_module(trajectory_encoder)
        self.mask_key, self.init_key, self.detach_next = mask_key, init_key, bool(detach_next)
        self.out_key = getattr(self.trajectory_encoder, "out_key", None) or self.trajectory_encoder.out_keys[0]
        self._enc_mask_key = enc_mask = getattr(timestep_encoder, "mask_key", K.MASK)
        time_key = getattr(self.trajectory_encoder, "time_key", K.TIME_IDX)
        self._pairs = [(key, key) for key in tin if key != enc_mask] + [(time_key, time_key)]
        srcs = [src for _, src in self._pairs]
        self.in_keys = [mask_key, *srcs, *(unravel_key(("next", src)) for src in srcs)]
        self._cut_keys = [*self.in_keys, init_key, unravel_key(("next", init_key))]
        self.out_keys = [self.out_key, unravel_key(("next", self.out_key))]

    @property
    def emb_dim(self) -> int:
        return encoder_emb_dim(self.trajectory_encoder)

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        from torchrl.modules import set_recurrent_mode

        if tensordict.batch_dims != 2:
            raise ValueError(f"MemoryEmbedding expects a [B, T] window, got batch_size {tuple(tensordict.batch_size)} "
                             "(reshape a flat SliceSampler batch with .reshape(num_slices, -1))")
        B, T = tensordict.batch_size
        refuse_multistep(tensordict, "MemoryEmbedding", "feed the one-step data (n-step targets are the loss's)")
        mask = tensordict.get(self.mask_key, None)
        if mask is None:  # an all-valid default would silently train on padding
            raise KeyError(f"MemoryEmbedding: batch has no key {self.mask_key!r} (False on padding; torchrl_amago's "
                           "sequence replay writes it; pass all-True for unpadded windows)")
        mask = as_bt(mask, B, T, self.mask_key).bool()
        cut = cut_at_trial_starts(tensordict, mask, self.init_key, self._cut_keys)
        src, mask = (tensordict, mask) if cut is None else (cut.td, cut.mask)
        seq = t_plus_one_sequence(src, self._pairs, mask, self._enc_mask_key)
        seq.set(getattr(self.trajectory_encoder, "init_key", K.IS_INIT), init_sequence(src, self.init_key, mask))
        with set_recurrent_mode(True):
            emb = self.trajectory_encoder(self.timestep_encoder(seq)).get(self.out_key)  # [B or W, T+1, D]
        now, nxt = emb[:, :-1], emb[:, 1:]
        if cut is not None:
            now, nxt = cut.uncut(now), cut.uncut(nxt)
        tensordict.set(self.out_key, now)
        tensordict.set(self.out_keys[1], nxt.detach() if self.detach_next else nxt)
        return tensordict
