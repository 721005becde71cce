"""Trajectory encoders: sequence mode for training, step mode (per-env state) for acting."""
from __future__ import annotations

from .base import TrajectoryEncoder, TrajectoryEncoderModule
from .feedforward import FFTrajEncoder, IdentityTrajEncoder
from .mamba import MambaTrajEncoder
from .recurrent import GRUTrajEncoder, LSTMTrajEncoder
from .sigma_reparam import SigmaReparam
from .transformer import KVCacheState, TransformerTrajEncoder

ENCODERS = {
    "transformer": TransformerTrajEncoder,
    "gru": GRUTrajEncoder,
    "rnn": GRUTrajEncoder,
    "lstm": LSTMTrajEncoder,
    "ff": FFTrajEncoder,
    "identity": IdentityTrajEncoder,
    "mamba": MambaTrajEncoder,
}


def make_trajectory_encoder(name: str, input_dim: int, max_seq_len: int, d_model: int | None = None,
                            n_layers: int | None = None, **kw) -> TrajectoryEncoder:
    """Build a trajectory encoder by name. `d_model` sets the width (the RNNs' d_hidden and d_output),
    `n_layers` the depth (a Transformer given d_model gets d_ff = 4 * d_model unless d_ff is passed); both default to each encoder's own default. Other kwargs go to the constructor."""
    if name not in ENCODERS:
        raise ValueError(f"unknown trajectory encoder {name!r}; expected one of {sorted(ENCODERS)}")
    cls = ENCODERS[name]
    if d_model is not None:
        if cls in (GRUTrajEncoder, LSTMTrajEncoder):
            kw.setdefault("d_hidden", d_model)
            kw.setdefault("d_output", d_model)
        elif cls is not IdentityTrajEncoder:
            kw.setdefault("d_model", d_model)
        if cls is TransformerTrajEncoder:
            kw.setdefault("d_ff", 4 * d_model)  # as the original's CLI helper
    if n_layers is not None and cls is not IdentityTrajEncoder:
        kw.setdefault("n_layers", n_layers)
    return cls(input_dim, max_seq_len, **kw)


__all__ = [
    "ENCODERS", "FFTrajEncoder", "GRUTrajEncoder", "IdentityTrajEncoder", "KVCacheState", "LSTMTrajEncoder",
    "MambaTrajEncoder", "SigmaReparam", "TrajectoryEncoder", "TrajectoryEncoderModule", "TransformerTrajEncoder",
    "make_trajectory_encoder",
]
