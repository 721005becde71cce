"""Memories the policy and loss accept (docs/api/modules.md); `as_sequence_module` maps each to what the loss runs."""
from __future__ import annotations

from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torch import nn

from ... import keys as K
from .base import TrajectoryEncoder
from .module import TrajectoryEncoderModule


def is_torchrl_recurrent(module) -> bool:
    """True for TorchRL's ``LSTMModule`` / ``GRUModule``."""
    from torchrl.modules import GRUModule, LSTMModule

    return isinstance(module, (LSTMModule, GRUModule))


def encoder_emb_dim(module: nn.Module) -> int:
    """Width of the state embedding a memory writes (what the heads read)."""
    if is_torchrl_recurrent(module):
        return int((getattr(module, "lstm", None) or getattr(module, "gru")).hidden_size)
    if isinstance(module, RecurrentSequenceModule):
        return module.emb_dim
    dim = getattr(module, "emb_dim", None)
    if dim is None:
        raise ValueError(f"{type(module).__name__} has no `emb_dim`: set `module.emb_dim = <output width>` so the "
                         "heads can be sized")
    return int(dim)


class RecurrentSequenceModule(TensorDictModuleBase):
    """Runs TorchRL's ``LSTMModule`` / ``GRUModule`` in recurrent mode over a ``[B, T]`` sequence (the loss uses it).
    Keys in: the module's in_key and ``"is_init"`` (stored hidden states are not read); out: its out_key."""

    def __init__(self, module: TensorDictModuleBase):
        super().__init__()
        if not is_torchrl_recurrent(module):
            raise ValueError(f"RecurrentSequenceModule wraps TorchRL's LSTMModule / GRUModule, got "
                             f"{type(module).__name__}")
        self.module = module
        self.in_key, self.init_key, self.out_key = module.in_keys[0], K.IS_INIT, module.out_keys[0]
        self.in_keys, self.out_keys = [self.in_key, self.init_key], [self.out_key]

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
        # AMAGO's windows are one trial each: no check for trial starts inside a row (a host sync on CUDA)
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
