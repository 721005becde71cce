"""AMAGO's learning update as a TorchRL LossModule (``AMAGOLoss``, moved by ``AMAGOSoftUpdate``), its n-step returns,
advantage filters and batch helpers, and `MemoryEmbedding` to train our memory inside TorchRL's own losses."""
from .amago_loss import DEFAULT_MULTIGAMMAS, DEFAULT_TAU, AMAGOLoss
from .batch import TrialCut, buffer_actions, cut_at_trial_starts, masked_mean, redq_reduce, t_plus_one_sequence
from .filters import FILTERS, binary_filter, exp_filter, leaky_relu_filter, make_filter
from .memory_embedding import MemoryEmbedding
from .returns import nstep_return
from .target_encoders import DEFAULT_BACKBONE_TAU, AMAGOSoftUpdate

__all__ = [
    "AMAGOLoss", "AMAGOSoftUpdate", "DEFAULT_BACKBONE_TAU", "DEFAULT_MULTIGAMMAS", "DEFAULT_TAU", "FILTERS",
    "binary_filter", "exp_filter", "leaky_relu_filter", "buffer_actions", "make_filter", "masked_mean", "nstep_return",
    "redq_reduce", "t_plus_one_sequence", "cut_at_trial_starts", "TrialCut", "MemoryEmbedding",
]
