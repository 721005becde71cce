"""MixedReplay: one [B, T] batch whose windows come from several sequence replays by weight (AMAGO's
MixtureOfDatasets, e.g. offline demos 0.8 + online data 0.2)."""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Callable, Sequence

import torch
from tensordict import TensorDictBase

from .replay import set_masks
from .replay_dump import check_dump_target, not_a_replay_dump, read_dump, write_folder
from .safe_files import check_folder, load_json

Schedule = Callable[[int], Sequence[float]]


class MixedReplay:
    """Sample each window's source from ``buffers`` (same ``seq_len``) with probabilities ``weights``, renormalised
    over the buffers holding a finished trial; ``schedule(num_batches) -> weights`` is called before every
    ``sample()``. The batch holds the keys common to all sources, right-padded to the longest window;
    ``last_counts`` holds how many windows came from each buffer in the last batch."""

    def __init__(self, buffers: Sequence, weights: Sequence[float], *, batch_size: int | None = None,
                 schedule: Schedule | None = None, generator: torch.Generator | None = None):
        self.buffers = list(buffers)
        if not self.buffers:
            raise ValueError("MixedReplay needs at least one buffer")
        seq_lens = {getattr(b, "seq_len", None) for b in self.buffers}
        if len(seq_lens) != 1:
            raise ValueError(f"all buffers must have the same seq_len, got {sorted(map(str, seq_lens))}")
        self.set_weights(weights)
        self.batch_size = batch_size if batch_size is not None else getattr(self.buffers[0], "batch_size", None)
        self.schedule, self.generator, self.num_batches = schedule, generator, 0
        self.last_counts = torch.zeros(len(self.buffers), dtype=torch.long)

    def set_weights(self, weights: Sequence[float]) -> None:
        self.weights = self._checked_weights(weights)

    def _checked_weights(self, weights) -> torch.Tensor:
        try:
            w = torch.as_tensor([float(x) for x in weights if not isinstance(x, (str, bytes, bool))],
                                dtype=torch.float64)
        except (TypeError, ValueError):
            w = None
        if w is None or w.shape != (len(self.buffers),) or bool((w < 0).any()) or not bool(torch.isfinite(w).all()):
            raise ValueError(f"weights must be {len(self.buffers)} finite non-negative numbers, got {weights!r}")
        return w

    @property
    def seq_len(self) -> int:
        return self.buffers[0].seq_len

    def num_trials(self) -> int:
        return sum(b.num_trials() for b in self.buffers)

    def __len__(self) -> int:
        return sum(len(b) for b in self.buffers)

    def current_weights(self) -> torch.Tensor:
        """Normalised sampling probabilities now (0 for buffers that cannot be sampled)."""
        if self.schedule is not None:
            self.set_weights(self.schedule(self.num_batches))
        ready = torch.tensor([b.num_trials() > 0 for b in self.buffers], dtype=torch.float64)
        w = self.weights * ready
        if float(w.sum()) <= 0:
            raise RuntimeError("MixedReplay: no buffer with positive weight holds a finished trial yet")
        return w / w.sum()

    def sample(self, batch_size: int | None = None) -> TensorDictBase:
        batch_size = batch_size or self.batch_size
        if batch_size is None:
            raise ValueError("MixedReplay.sample needs a batch_size (here or in the constructor)")
        src = torch.multinomial(self.current_weights(), batch_size, replacement=True, generator=self.generator)
        counts = torch.bincount(src, minlength=len(self.buffers))
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Got conflicting batch_sizes")
            parts = [buf.sample(c) for buf, c in zip(self.buffers, counts.tolist()) if c]
        keys = set(parts[0].keys(True, True))
        for p in parts[1:]:
            keys &= set(p.keys(True, True))
        T = max(p.shape[1] for p in parts)
        mask_key = getattr(self.buffers[0], "mask_key", "mask")
        parts = [_pad_windows(p.select(*keys), T, mask_key) for p in parts]
        try:
            out = torch.cat(parts, 0)
        except Exception as e:
            raise ValueError(f"MixedReplay: sources disagree on a shared key's shape or dtype ({e})") from e
        perm = torch.randperm(batch_size, generator=self.generator)
        self.num_batches += 1
        self.last_counts = counts
        return out[perm]

    def dumps(self, path) -> None:
        """Write ``mixed.json`` and one ``buffer_<i>`` dump per buffer into the folder ``path`` (new, empty or an
        earlier MixedReplay dump, replaced atomically; any other folder is refused)."""
        path = Path(path).absolute()
        check_dump_target(path, "mixed replay dump", self._not_a_dump)

        def write(folder: Path) -> None:
            for i, b in enumerate(self.buffers):
                b.dumps(folder / f"buffer_{i}")
            with open(folder / "mixed.json", "w") as f:
                json.dump({"num_batches": self.num_batches, "weights": self.weights.tolist()}, f)
                f.flush()
                os.fsync(f.fileno())

        write_folder(path, write)

    def _not_a_dump(self, path: Path) -> str | None:
        try:
            check_folder(path, lambda rel: rel == "mixed.json" or rel.split("/")[0].startswith("buffer_"),
                         "mixed replay dump")
            if not isinstance(load_json(path / "mixed.json"), dict):
                return f"{path / 'mixed.json'} is not a mixed replay's settings"
        except (OSError, ValueError) as e:
            return str(e).splitlines()[0]
        for part in sorted(p for p in path.iterdir() if p.name != "mixed.json"):
            why = not_a_replay_dump(part)
            if why:
                return why
        return None

    def loads(self, path) -> None:
        """Load a folder written by :meth:`dumps`: ``mixed.json`` and every buffer's dump are checked before any
        buffer is replaced (any other file, or a bad field, raises an error naming it)."""
        path = Path(path).absolute()
        parts = {f"buffer_{i}" for i in range(len(self.buffers))}
        check_folder(path, lambda rel: rel == "mixed.json" or rel.split("/")[0] in parts, "mixed replay dump")
        meta_file = path / "mixed.json"
        meta = load_json(meta_file)
        num_batches, weights = meta.get("num_batches") if isinstance(meta, dict) else None, None
        if isinstance(num_batches, bool) or not isinstance(num_batches, int) or num_batches < 0:
            raise ValueError(f"{meta_file}: num_batches must be an integer >= 0, got {num_batches!r}; nothing was "
                             f"loaded")
        try:
            weights = self._checked_weights(meta.get("weights"))
        except (ValueError, TypeError) as e:
            raise ValueError(f"{meta_file}: weights: {e}; nothing was loaded") from None
        for i, b in enumerate(self.buffers):
            read_dump(b, path / f"buffer_{i}")
        for i, b in enumerate(self.buffers):
            b.loads(path / f"buffer_{i}")
        self.num_batches, self.weights = num_batches, weights


def _pad_windows(windows: TensorDictBase, T: int, mask_key="mask") -> TensorDictBase:
    """Right-pad ``[B, t]`` windows to ``[B, T]``: the last step repeats, with the masks False."""
    t = windows.shape[1]
    if t == T:
        return windows
    out = windows[:, torch.arange(T).clamp(max=t - 1)]
    if mask_key in out.keys(True):
        set_masks(out, out.get(mask_key) & (torch.arange(T) < t), mask_key)
    return out
