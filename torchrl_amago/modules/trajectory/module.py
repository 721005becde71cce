"""A `TrajectoryEncoder` as a TorchRL recurrent module (step mode for collectors, sequence mode for losses)."""
from __future__ import annotations

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from tensordict.utils import NestedKey

from ... import keys as K
from ..weight_cache import WeightProbe
from .base import TrajectoryEncoder
from .windows import trial_windows

#: default prefix of the state entries (TorchRL's recurrent modules use ``"recurrent_state_h"`` and so on)
STATE_PREFIX = "recurrent_state"


def _next(key: NestedKey) -> tuple:
    return ("next", *(key if isinstance(key, tuple) else (key,)))


class TrajectoryEncoderModule(TensorDictModuleBase):
    """A `TrajectoryEncoder` as a TorchRL recurrent module (docs/api/modules.md). Keys in: ``in_key``, ``time_key``,
    ``init_key`` and, in step mode, ``state_keys``; out: ``out_key`` (in step mode also the next state under "next")."""

    def __init__(self, encoder: TrajectoryEncoder, in_key: NestedKey = K.TSTEP_EMB, time_key: NestedKey = K.TIME_IDX,
                 out_key: NestedKey = K.STATE_EMB, segment_key: NestedKey = K.SEGMENT, *,
                 init_key: NestedKey = K.IS_INIT, state_prefix: str = STATE_PREFIX,
                 default_recurrent_mode: bool | None = None, split_trajectories: bool = True):
        super().__init__()
        if not isinstance(encoder, TrajectoryEncoder):
            raise ValueError(f"TrajectoryEncoderModule wraps a torchrl_amago TrajectoryEncoder, got "
                             f"{type(encoder).__name__} (TorchRL's LSTMModule / GRUModule need no wrapper)")
        if not isinstance(state_prefix, str) or not state_prefix:
            raise ValueError(f"state_prefix must be a non-empty string, got {state_prefix!r}")
        self.encoder = encoder
        self.__dict__["_probe"] = WeightProbe(encoder)  # step mode reuses cached weights only once they are checked
        self.in_key, self.time_key, self.out_key, self.segment_key = in_key, time_key, out_key, segment_key
        self.init_key, self.state_prefix = init_key, state_prefix
        self._recurrent_mode, self.split_trajectories = default_recurrent_mode, bool(split_trajectories)
        try:
            self._state_names, self._state_error = list(encoder.state_shapes()), None
        except NotImplementedError as err:  # sequence mode still works; step mode raises this
            self._state_names, self._state_error = [], err
        self.state_keys = [f"{state_prefix}_{name}" for name in self._state_names]
        self.in_keys = [in_key, time_key, *self.state_keys, init_key]
        self.out_keys = [out_key, *(_next(k) for k in self.state_keys)]

    @property
    def emb_dim(self) -> int:
        return self.encoder.emb_dim

    @property
    def packable(self) -> bool:
        return self.encoder.packable

    @property
    def recurrent_mode(self) -> bool:
        """True: sequence mode. ``set_recurrent_mode`` decides when set, else ``default_recurrent_mode``."""
        from torchrl.modules import recurrent_mode

        mode = recurrent_mode()
        return bool(self._recurrent_mode) if mode is None else bool(mode)

    @recurrent_mode.setter
    def recurrent_mode(self, value):
        raise RuntimeError("recurrent_mode cannot be changed in place: use torchrl.modules.set_recurrent_mode(...) or "
                           "TrajectoryEncoderModule(..., default_recurrent_mode=...)")

    def make_tensordict_primer(self):
        """TorchRL's ``TensorDictPrimer`` declaring the state entries (zeros = an empty memory) on the env."""
        from torchrl.data import Unbounded
        from torchrl.envs.transforms import TensorDictPrimer

        if self._state_error is not None:
            raise self._state_error
        return TensorDictPrimer({key: Unbounded(shape=shape, dtype=dtype) for key, (shape, dtype) in
                                 zip(self.state_keys, self.encoder.state_shapes().values())}, expand_specs=True)

    def _required(self, td: TensorDictBase, key: NestedKey, hint: str) -> torch.Tensor:
        val = td.get(key, None)
        if val is None:
            raise KeyError(f"TrajectoryEncoderModule: key {key!r} not found in the tensordict ({hint})")
        return val

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        return self._sequence(tensordict) if self.recurrent_mode else self._step(tensordict)

    def _sequence(self, tensordict: TensorDictBase) -> TensorDictBase:
        x = self._required(tensordict, self.in_key, "the timestep encoder's output")
        t = self._required(tensordict, self.time_key, "add the EpisodeTime transform")
        if x.ndim < 3:
            raise ValueError(f"{self.in_key!r} must have shape [B, T, D] (sequence mode), got {tuple(x.shape)}; "
                             "to act one step per env use step mode (the default outside set_recurrent_mode(True))")
        lead = x.shape[:-1]
        if t.shape == (*lead, 1):
            t = t.squeeze(-1)
        if t.shape != lead:
            raise ValueError(f"{self.time_key!r} must have shape {tuple(lead)} or {(*lead, 1)}, got {tuple(t.shape)}")
        segment = tensordict.get(self.segment_key, None)  # windows packed into rows (the loss's pack_windows)
        if segment is not None:
            segment = segment.reshape(-1, segment.shape[-1])
            if not self.encoder.packable:
                raise ValueError(f"{type(self.encoder).__name__} cannot keep packed windows apart (packable=False); "
                                 f"drop the {self.segment_key!r} key or use AMAGOLoss(pack_windows='never')")
        elif self.split_trajectories:
            starts = self._trial_starts(tensordict, lead)
            if starts is not None and not self.encoder.packable:  # one window per trial, written back in place
                return self._by_trial(tensordict, x, t, lead, starts)
            segment = None if starts is None else starts.long().cumsum(-1)
        kw = {} if segment is None else {"segment": segment}
        out = self.encoder(x.reshape(-1, *x.shape[-2:]), t.reshape(-1, t.shape[-1]), **kw)
        tensordict.set(self.out_key, out.reshape(*lead, out.shape[-1]))
        return tensordict

    def _trial_starts(self, tensordict: TensorDictBase, lead: torch.Size) -> torch.Tensor | None:
        """``init_key`` as ``[B, T]`` bool where it is True after a row's first step, else None."""
        is_init = tensordict.get(self.init_key, None)
        if is_init is None:
            return None
        if is_init.shape == (*lead, 1):
            is_init = is_init.squeeze(-1)
        if is_init.shape != lead:
            raise ValueError(f"{self.init_key!r} must have shape {tuple(lead)} or {(*lead, 1)}, got "
                             f"{tuple(is_init.shape)}")
        is_init = is_init.reshape(-1, lead[-1]).bool()
        return is_init if bool(is_init[:, 1:].any()) else None

    def _by_trial(self, tensordict: TensorDictBase, x: torch.Tensor, t: torch.Tensor, lead: torch.Size,
                  starts: torch.Tensor) -> TensorDictBase:
        """Sequence mode for an encoder that cannot restart inside a row: each trial from position 0 of its own row."""
        row, step, inside = trial_windows(starts)
        x, t = x.reshape(-1, *x.shape[-2:]), t.reshape(-1, t.shape[-1])
        out = self.encoder(x[row[:, None], step], t[row[:, None], step])  # [W, T, D]
        at = (row[:, None].expand_as(step)[inside], step[inside])
        out = out.new_zeros(*x.shape[:2], out.shape[-1]).index_put(at, out[inside])
        tensordict.set(self.out_key, out.reshape(*lead, out.shape[-1]))
        return tensordict

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        if self._state_error is not None:
            raise self._state_error
        shape = tensordict.batch_size
        flat = tensordict.reshape(-1)
        x = self._required(flat, self.in_key, "the timestep encoder's output")
        n = x.shape[0]
        state = self._read_state(flat, n, x.device, len(shape))
        t = self._required(flat, self.time_key, "add the EpisodeTime transform").reshape(n, -1)
        is_init = self._required(flat, self.init_key, "add TorchRL's InitTracker transform").reshape(n, -1)
        if x.ndim != 2 or t.shape[-1] != 1 or is_init.shape[-1] != 1:
            raise ValueError(f"step mode reads one step per env: {self.in_key!r} [*, D], {self.time_key!r} and "
                             f"{self.init_key!r} [*, 1]; got {tuple(x.shape)}, {tuple(t.shape)}, "
                             f"{tuple(is_init.shape)}")
        state = self.encoder.reset_state(state, is_init.squeeze(-1).to(x.device))
        token = self._probe.enter()
        try:
            out, state = self.encoder.step(x, t.squeeze(-1).to(x.device), state)
        finally:
            self._probe.leave(token)
        tensordict.set(self.out_key, out.reshape(*shape, out.shape[-1]))
        tensors = self.encoder.state_to_tensors(state)
        for name, key in zip(self._state_names, self.state_keys):
            tensordict.set(_next(key), tensors[name].reshape(*shape, *tensors[name].shape[1:]))
        return tensordict

    def _read_state(self, flat: TensorDictBase, n: int, device, batch_dims: int):
        """The encoder state of the n envs, from copies of the state entries (the root's stay as they were)."""
        vals = [flat.get(key, None) for key in self.state_keys]
        missing = [key for key, v in zip(self.state_keys, vals) if v is None]
        if not missing:
            return self.encoder.state_from_tensors(
                {name: v.to(device, copy=True) for name, v in zip(self._state_names, vals)})
        if len(missing) < len(vals):
            raise KeyError(f"TrajectoryEncoderModule: state entries {missing} are missing while "
                           f"{sorted(set(self.state_keys) - set(missing))} are present")
        if batch_dims > 1:  # most likely a [B, T] sequence sent to step mode
            raise KeyError(f"TrajectoryEncoderModule (step mode) got a {batch_dims}-d batch without the state entries "
                           f"{self.state_keys}: for a [B, T] sequence use `with torchrl.modules.set_recurrent_mode("
                           "True)` (TorchRL losses do) or default_recurrent_mode=True; to act, add "
                           "module.make_tensordict_primer() to the env")
        return self.encoder.init_state(n, device)  # no primer: a fresh memory, carried on under "next"
