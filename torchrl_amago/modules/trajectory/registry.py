"""Trajectory encoders by name (``--traj_encoder``): ``make_trajectory_encoder``, ``register_trajectory_encoder``."""
from __future__ import annotations

import inspect
from typing import Callable

from torch import nn
from torchrl.modules import GRUModule, LSTMModule

from ... import keys as K
from .feedforward import FFTrajEncoder, IdentityTrajEncoder
from .mamba import MambaTrajEncoder
from .recurrent import GRUTrajEncoder, LSTMTrajEncoder
from .transformer import TransformerTrajEncoder

Builder = Callable[..., nn.Module]  # (input_dim, max_seq_len, d_model, n_layers, **kw) -> memory


def _accepts(cls, name: str) -> bool:
    params = inspect.signature(cls).parameters
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def _by_signature(cls) -> Builder:
    def build(input_dim, max_seq_len, d_model=None, n_layers=None, **kw):
        if d_model is not None and _accepts(cls, "d_model"):
            kw.setdefault("d_model", d_model)
        if n_layers is not None and _accepts(cls, "n_layers"):
            kw.setdefault("n_layers", n_layers)
        return cls(input_dim, max_seq_len, **kw)

    return build


def _widths(cls, **per_d_model: int) -> Builder:
    """Defaults `name = multiple * d_model` for each of `per_d_model`, and `n_layers`."""
    def build(input_dim, max_seq_len, d_model=None, n_layers=None, **kw):
        if d_model is not None:
            for name, mult in per_d_model.items():
                kw.setdefault(name, mult * d_model)
        if n_layers is not None:
            kw.setdefault("n_layers", n_layers)
        return cls(input_dim, max_seq_len, **kw)

    return build


def _torchrl_rnn(cls) -> Builder:
    def build(input_dim, max_seq_len, d_model=None, n_layers=None, **kw):
        return cls(input_size=input_dim, hidden_size=d_model or 256, num_layers=n_layers or 1,
                   in_key=K.TSTEP_EMB, out_key=K.STATE_EMB, **kw)

    return build


_REGISTRY: dict[str, tuple[object, Builder]] = {}
#: ``{name: class}`` of the registered encoders (kept in step with the registry; do not edit by hand)
ENCODERS: dict[str, object] = {}


def register_trajectory_encoder(name: str, cls, *, builder: Builder | None = None, overwrite: bool = False) -> None:
    """Make ``cls`` selectable as ``name`` (``--traj_encoder name``, ``make_trajectory_encoder(name, ...)``)."""
    if not isinstance(name, str) or not name or not name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"trajectory encoder names are non-empty [A-Za-z0-9_-] strings, got {name!r}")
    if name in _REGISTRY and not overwrite and _REGISTRY[name][0] is not cls:
        raise ValueError(f"trajectory encoder {name!r} is already registered ({_REGISTRY[name][0]!r}); pass "
                         "overwrite=True to replace it")
    if builder is None and not callable(cls):
        raise ValueError(f"register_trajectory_encoder({name!r}, ...) needs a class or a builder")
    _REGISTRY[name] = (cls, builder or _by_signature(cls))
    ENCODERS[name] = cls


def trajectory_encoder_names() -> tuple[str, ...]:
    """The registered names, sorted (the config's ``--traj_encoder`` choices)."""
    return tuple(sorted(_REGISTRY))


def make_trajectory_encoder(name: str, input_dim: int, max_seq_len: int, d_model: int | None = None,
                            n_layers: int | None = None, **kw) -> nn.Module:
    """A registered trajectory encoder of width ``d_model`` and depth ``n_layers``; kwargs go to the constructor."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown trajectory encoder {name!r}; expected one of {list(trajectory_encoder_names())} "
                         "(add one with torchrl_amago.modules.register_trajectory_encoder)")
    return _REGISTRY[name][1](input_dim, max_seq_len, d_model=d_model, n_layers=n_layers, **kw)


for _name, _cls, _builder in (  # the built-ins, with their width/depth mappings (d_ff = 4 d_model: the original CLI's)
        ("transformer", TransformerTrajEncoder, _widths(TransformerTrajEncoder, d_model=1, d_ff=4)),
        ("gru", GRUTrajEncoder, _widths(GRUTrajEncoder, d_hidden=1, d_output=1)),
        ("rnn", GRUTrajEncoder, _widths(GRUTrajEncoder, d_hidden=1, d_output=1)),
        ("lstm", LSTMTrajEncoder, _widths(LSTMTrajEncoder, d_hidden=1, d_output=1)),
        ("ff", FFTrajEncoder, None),
        ("identity", IdentityTrajEncoder, None),
        ("mamba", MambaTrajEncoder, None),
        ("torchrl_lstm", LSTMModule, _torchrl_rnn(LSTMModule)),
        ("torchrl_gru", GRUModule, _torchrl_rnn(GRUModule))):
    register_trajectory_encoder(_name, _cls, builder=_builder)
