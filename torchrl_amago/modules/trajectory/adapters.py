"""The memories the acting policy and the loss accept, and how each runs in sequence mode (training).

Three kinds, one contract (``[B, T]`` causal pass in training, one step per env while acting, same outputs):

- a :class:`TrajectoryEncoder` (ours): per-env acting state held by the policy (or, with
  ``AMAGOPolicy(tensordict_state=True)``, in TensorDict entries as below), cleared where ``is_init``; the loss runs it
  through :class:`TrajectoryEncoderModule`, which is also a TorchRL recurrent module of its own (``module.py``).
- TorchRL's ``LSTMModule`` / ``GRUModule`` (``in_key`` = the timestep encoder's output, ``"tstep_emb"``): acting
  state lives in TensorDict keys (``module.make_tensordict_primer()`` on the env, as in any TorchRL pipeline;
  the policy writes the next state under ``"next"``); the loss runs it in recurrent mode through
  :class:`RecurrentSequenceModule`, on a sequence that carries ``is_init``.
- a feed-forward ``TensorDictModule`` reading ``"tstep_emb"`` (and optionally ``"time_idx"`` / ``"is_init"``) and
  writing one key: stateless, so step mode and sequence mode are the same call.

:func:`as_sequence_module` maps any of them to the TensorDict module the loss runs, and rejects anything else
with the wrapper to use.
"""
from __future__ import annotations

from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torch import nn

from ... import keys as K
from .base import TrajectoryEncoder
from .module import TrajectoryEncoderModule


def _torchrl_recurrent_types() -> tuple[type, ...]:
    from torchrl.modules import GRUModule, LSTMModule

    return LSTMModule, GRUModule


def is_torchrl_recurrent(module) -> bool:
    """True for TorchRL's ``LSTMModule`` / ``GRUModule``."""
    return isinstance(module, _torchrl_recurrent_types())


def encoder_emb_dim(module: nn.Module) -> int:
    """Width of the state embedding a memory writes (what the heads read)."""
    if is_torchrl_recurrent(module):
        rnn = getattr(module, "lstm", None) or getattr(module, "gru")
        return int(rnn.hidden_size)
    if isinstance(module, RecurrentSequenceModule):
        return module.emb_dim
    dim = getattr(module, "emb_dim", None)
    if dim is None:
        raise ValueError(f"{type(module).__name__} has no `emb_dim`: set `module.emb_dim = <output width>` so the "
                         "heads can be sized")
    return int(dim)


class RecurrentSequenceModule(TensorDictModuleBase):
    """Runs TorchRL's ``LSTMModule`` / ``GRUModule`` in recurrent mode over a ``[B, T]`` sequence (the loss uses it).

    The sequence must carry ``"is_init"`` (the loss writes it: True at position 0, so a window starts from a zero
    state as AMAGO's RNNs do, and where a new trial starts inside the window). Stored hidden states are not
    read. Writes ``out_key`` ``[B, T, hidden_size]``."""

    def __init__(self, module: TensorDictModuleBase):
        super().__init__()
        if not is_torchrl_recurrent(module):
            raise ValueError(f"RecurrentSequenceModule wraps TorchRL's LSTMModule / GRUModule, got "
                             f"{type(module).__name__}")
        self.module = module
        self.in_key, self.init_key, self.out_key = module.in_keys[0], K.IS_INIT, module.out_keys[0]
        self.in_keys = [self.in_key, self.init_key]
        self.out_keys = [self.out_key]

    @property
    def emb_dim(self) -> int:
        return encoder_emb_dim(self.module)

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        from torchrl.modules import set_recurrent_mode

        for key in self.in_keys:
            if key not in tensordict.keys(True):
                raise KeyError(f"{type(self.module).__name__}: key {key!r} not found in the sequence (its in_key must "
                               f"be the timestep encoder's output, e.g. in_key={K.TSTEP_EMB!r})")
        with set_recurrent_mode(True):
            out = self.module(tensordict.select(*self.in_keys))
        tensordict.set(self.out_key, out.get(self.out_key))
        return tensordict


def as_sequence_module(module: nn.Module) -> TensorDictModuleBase:
    """The TensorDict module the loss runs in sequence mode for any accepted memory (see the module docstring)."""
    if isinstance(module, (TrajectoryEncoderModule, RecurrentSequenceModule)):
        return module
    if isinstance(module, TrajectoryEncoder):
        # sequence mode even outside a loss's forward; AMAGO's windows are one trial each (position 0 starts a fresh
        # memory), so no per-batch check for trial starts inside a row (a host sync on CUDA)
        return TrajectoryEncoderModule(module, default_recurrent_mode=True, split_trajectories=False)
    if is_torchrl_recurrent(module):
        return RecurrentSequenceModule(module)
    if isinstance(module, TensorDictModuleBase):
        if not list(getattr(module, "out_keys", []) or []):
            raise ValueError(f"a TensorDict trajectory encoder needs out_keys, got {type(module).__name__} without")
        return module  # feed-forward: reads its in_keys from the sequence, writes out_keys[0]
    if isinstance(module, (nn.LSTM, nn.GRU)):
        kind = "LSTM" if isinstance(module, nn.LSTM) else "GRU"
        raise ValueError(f"a bare nn.{kind} is not a trajectory encoder: use torchrl.modules.{kind}Module("
                         f"{kind.lower()}=..., in_key={K.TSTEP_EMB!r}, out_key={K.STATE_EMB!r}) (state in TensorDict "
                         f"keys, TorchRL style) or torchrl_amago's {kind}TrajEncoder")
    raise ValueError(f"{type(module).__name__} is not a trajectory encoder: subclass torchrl_amago.modules."
                     f"TrajectoryEncoder, or wrap a memory-free nn.Module as tensordict.nn.TensorDictModule(module, "
                     f"in_keys=[{K.TSTEP_EMB!r}], out_keys=[{K.STATE_EMB!r}]) and set its `emb_dim`")


__all__ = ["RecurrentSequenceModule", "as_sequence_module", "encoder_emb_dim", "is_torchrl_recurrent"]
