"""AMAGO's learning update as a TorchRL LossModule, plus its n-step returns and advantage filters, and
`MemoryEmbedding` to train our memory inside TorchRL's own losses, and `AMAGOSoftUpdate` for its target copies."""
from .amago_loss import DEFAULT_MULTIGAMMAS, DEFAULT_TAU, DEFAULT_TARGET_BACKBONE_MIN_GAMMA, AMAGOLoss
from .batch import buffer_actions, masked_mean, redq_reduce, t_plus_one_sequence
from .filters import FILTERS, binary_filter, exp_filter, leaky_relu_filter, make_filter
from .memory_embedding import MemoryEmbedding
from .returns import nstep_return, tree_backup_return
from .target_update import DEFAULT_BACKBONE_TAU, AMAGOSoftUpdate

__all__ = [
    "AMAGOLoss", "AMAGOSoftUpdate", "DEFAULT_BACKBONE_TAU", "DEFAULT_MULTIGAMMAS", "DEFAULT_TAU",
    "DEFAULT_TARGET_BACKBONE_MIN_GAMMA", "FILTERS",
    "binary_filter", "exp_filter", "leaky_relu_filter", "buffer_actions", "make_filter", "masked_mean", "nstep_return",
    "redq_reduce", "t_plus_one_sequence", "tree_backup_return", "MemoryEmbedding",
]
