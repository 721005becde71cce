"""Trajectory encoders: sequence mode for training, step mode (per-env state) for acting."""
from __future__ import annotations

from .adapters import RecurrentSequenceModule, as_sequence_module, encoder_emb_dim, is_torchrl_recurrent
from .base import TrajectoryEncoder
from .feedforward import FFTrajEncoder, IdentityTrajEncoder
from .mamba import MambaTrajEncoder
from .module import TrajectoryEncoderModule
from .recurrent import GRUTrajEncoder, LSTMTrajEncoder
from .registry import ENCODERS, make_trajectory_encoder, register_trajectory_encoder, trajectory_encoder_names
from .sigma_reparam import SigmaReparam
from .transformer import KVCacheState, TransformerTrajEncoder

__all__ = [
    "ENCODERS", "FFTrajEncoder", "GRUTrajEncoder", "IdentityTrajEncoder", "KVCacheState", "LSTMTrajEncoder",
    "MambaTrajEncoder", "RecurrentSequenceModule", "SigmaReparam", "TrajectoryEncoder", "TrajectoryEncoderModule",
    "TransformerTrajEncoder", "as_sequence_module", "encoder_emb_dim", "is_torchrl_recurrent",
    "make_trajectory_encoder", "register_trajectory_encoder", "trajectory_encoder_names",
]
