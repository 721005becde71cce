"""AMAGO's learning update as a TorchRL LossModule, plus its n-step returns and advantage filters."""
from .amago_loss import DEFAULT_MULTIGAMMAS, DEFAULT_TAU, AMAGOLoss
from .batch import buffer_actions, masked_mean, redq_reduce, t_plus_one_sequence
from .filters import FILTERS, binary_filter, exp_filter, leaky_relu_filter, make_filter
from .returns import nstep_return

__all__ = [
    "AMAGOLoss", "DEFAULT_MULTIGAMMAS", "DEFAULT_TAU", "FILTERS", "binary_filter", "exp_filter", "leaky_relu_filter",
    "buffer_actions", "make_filter", "masked_mean", "nstep_return", "redq_reduce", "t_plus_one_sequence",
]
