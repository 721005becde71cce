"""TrialWindowSampler: draws [B, T] windows of consecutive steps of one trial, as storage indices + mask.
``sampling``: ``"trial"`` (trials uniformly, the original) or ``"timestep"`` (trials by length). ``padded_sampling``:
window start uniform in ``[0, max(L - T, 0)]`` (``"none"``) or ``[0, L - 1]`` (``"right"``). Steps past a trial's
end repeat its last step, with ``mask`` False. ``trim=True`` cuts each batch to its longest valid window."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from torchrl.data.replay_buffers.samplers import Sampler

from .safe_files import load_json
from .trial_index import TrialIndex

SAMPLING_MODES = ("trial", "timestep")
PADDING_MODES = ("none", "right")


def draw_starts(lengths: torch.Tensor, seq_len: int, padded_sampling: str,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Window start per trial of length ``lengths`` (see module docstring)."""
    n_starts = (lengths - seq_len).clamp(min=0) + 1 if padded_sampling == "none" else lengths
    u = torch.rand(lengths.shape, generator=generator, dtype=torch.float64)
    return torch.minimum((u * n_starts).long(), n_starts - 1)


def window_offsets(lengths: torch.Tensor, starts: torch.Tensor, seq_len: int,
                   trim: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Offsets ``[B, T]`` in each trial (clamped to its end), mask; ``trim``: T = longest valid window (<= seq_len)."""
    if trim:
        seq_len = max(1, min(seq_len, int((lengths - starts).max())))
    offsets = starts[:, None] + torch.arange(seq_len)
    mask = offsets < lengths[:, None]
    return torch.minimum(offsets, lengths[:, None] - 1), mask


class TrialWindowSampler(Sampler):
    """Sampler over the trials of a :class:`~torchrl_amago.data.writer.TrialWriter`'s index (``attach``);
    ``sample(storage, B)`` returns the storage index ``[B, T]`` and ``{"mask": [B, T], "trial": [B], "start": [B]}``."""

    def __init__(self, seq_len: int, *, sampling: str = "trial", padded_sampling: str = "none", trim: bool = True):
        if seq_len <= 0:
            raise ValueError(f"seq_len must be positive, got {seq_len}")
        if sampling not in SAMPLING_MODES:
            raise ValueError(f"sampling must be one of {SAMPLING_MODES}, got {sampling!r}")
        if padded_sampling not in PADDING_MODES:
            raise ValueError(f"padded_sampling must be one of {PADDING_MODES}, got {padded_sampling!r}")
        self.seq_len, self.sampling, self.padded_sampling = int(seq_len), sampling, padded_sampling
        self.trim = bool(trim)
        self.index: TrialIndex | None = None

    def attach(self, index: TrialIndex) -> None:
        self.index = index

    def sample_trials(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw ``batch_size`` trial ids (with replacement) and their lengths."""
        if self.index is None:
            raise RuntimeError("TrialWindowSampler is not attached to a TrialWriter's index")
        ids, lengths = self.index.sampleable()
        if ids.numel() == 0:
            raise RuntimeError("the sequence replay holds no finished trial yet; collect more before sampling "
                               "(or use max_trial_len so long trials are stored as snippets)")
        if self.sampling == "trial":
            pick = torch.randint(ids.numel(), (batch_size,), generator=self._rng)
        else:
            pick = torch.multinomial(lengths.double(), batch_size, replacement=True, generator=self._rng)
        return ids[pick], lengths[pick]

    def windows(self, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One window per trial (``lengths`` [B]): starts [B], offsets [B, T] (clamped to its end) and mask [B, T]."""
        starts = draw_starts(lengths, self.seq_len, self.padded_sampling, self._rng)
        offsets, mask = window_offsets(lengths, starts, self.seq_len, self.trim)
        return starts, offsets, mask

    def sample_whole_trials(self, batch_size: int) -> tuple[torch.Tensor, dict]:
        """Draw ``batch_size`` trials: the storage index of their steps and ``{"trial": ids, "length": lengths}``."""
        ids, lengths = self.sample_trials(batch_size)
        unit = torch.repeat_interleave(ids, lengths)
        offset = torch.arange(int(lengths.sum())) - torch.repeat_interleave(lengths.cumsum(0) - lengths, lengths)
        return self.index.physical(unit, offset), {"trial": ids, "length": lengths}

    def sample(self, storage, batch_size: int) -> tuple[torch.Tensor, dict]:
        ids, lengths = self.sample_trials(batch_size)
        starts, offsets, mask = self.windows(lengths)
        index = self.index.physical(ids[:, None], offsets)
        return index, {"mask": mask, "trial": ids, "start": starts}

    def _sampleable_count(self, storage, batch_size: int) -> int:
        return 0 if self.index is None else int(self.index.sampleable()[0].numel())

    def state_dict(self) -> dict:
        return {"seq_len": self.seq_len, "sampling": self.sampling, "padded_sampling": self.padded_sampling,
                "trim": self.trim}

    def load_state_dict(self, state_dict: dict) -> None:
        if not isinstance(state_dict, dict):
            raise TypeError(f"TrialWindowSampler.load_state_dict takes the dict of state_dict(), got "
                            f"{type(state_dict).__name__}")
        self._check(state_dict)

    def _check(self, cfg: dict) -> None:
        if cfg != self.state_dict():
            warnings.warn(f"sampling settings changed since the checkpoint: {cfg} -> {self.state_dict()}")

    def _empty(self) -> None:
        return

    def dumps(self, path) -> None:
        path = Path(path).absolute()
        path.mkdir(parents=True, exist_ok=True)
        with open(path / "sampler_metadata.json", "w") as f:
            json.dump(self.state_dict(), f)

    def loads(self, path) -> None:
        file = Path(path).absolute() / "sampler_metadata.json"
        cfg = load_json(file)
        if not isinstance(cfg, dict):
            raise ValueError(f"{file}: expected the sampler settings (a JSON object), got {type(cfg).__name__}")
        self._check(cfg)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(" + ", ".join(f"{k}={v!r}" for k, v in self.state_dict().items()) + ")"
