"""Sequence replay: a TorchRL ReplayBuffer on LazyMemmapStorage. ``rb.extend`` writes a Collector's output (trials
may span batches, :mod:`~torchrl_amago.data.writer`); ``rb.sample()`` returns ``[B, T]`` windows of one trial plus
``"mask"`` (False on padding); ``rb.dumps``/``rb.loads`` save and restore it without pickles (docs/api/data.md). A
trial is stored as one segment per collector batch, so :class:`TrialStorage` refuses a ``SliceSampler`` unless it
reads by trial id and step (``fragmented=True``)."""
from __future__ import annotations

import contextlib
import logging
import tempfile
from typing import Callable

import torch
from tensordict import TensorDictBase
from tensordict.utils import NestedKey
from torchrl.data import LazyMemmapStorage, PrioritizedSliceSampler, ReplayBuffer, SliceSampler

from .. import keys as K
from .replay_dump import dump_replay, load_replay
from .safe_files import UnsafeFileError
from .sampler import TrialWindowSampler
from .writer import TrialWriter

TrialTransform = Callable[[TensorDictBase], TensorDictBase]
SLICE_SAMPLER_RECIPE = (f"SliceSampler(slice_len=..., traj_key={K.TRIAL_ID!r}, step_key={K.TRIAL_STEP!r}, "
                        f"fragmented=True)")


def check_reader(buffer) -> None:
    """Raise ValueError if ``buffer``'s sampler is a ``SliceSampler`` that finds trajectories by storage order; a
    ``PrioritizedSliceSampler`` on the trial ids passes (TorchRL gives it no fragmented mode): its windows never
    straddle trials and end with each collector batch, exact when a batch holds whole trials (docs/api/data.md)."""
    sampler = getattr(buffer, "_sampler", None) or getattr(buffer, "_init_sampler", None)
    if isinstance(sampler, PrioritizedSliceSampler) and sampler.traj_key == K.TRIAL_ID:
        return
    if isinstance(sampler, SliceSampler) and not getattr(sampler, "fragmented", False):
        how = "end_key" if not getattr(sampler, "_fetch_traj", True) else f"traj_key={sampler.traj_key!r}"
        raise ValueError(
            f"{type(sampler).__name__}({how}) cannot read the sequence replay's storage: it finds trajectories by "
            f"storage order, but each trial is stored as one segment per collector batch, interleaved with the "
            f"other envs' segments, so its windows would straddle trials and envs (end_key) or stop at every "
            f"collector batch (traj_key without fragmented=True). Use {SLICE_SAMPLER_RECIPE}: every stored step "
            f"carries its trial id and its offset in the trial (docs/api/data.md, 'TorchRL's SliceSampler').")


class TrialStorage(LazyMemmapStorage):
    """``LazyMemmapStorage`` whose ``attach`` refuses a ``SliceSampler`` that finds trajectories by storage order,
    and which never reads TorchRL's storage format (it can unpickle): ``loads``/``load`` raise
    :class:`UnsafeFileError` and ``shared_init=True`` is refused; load a replay with ``SequenceReplayBuffer.loads``."""

    def __init__(self, max_size: int, **kwargs):
        if kwargs.get("shared_init"):
            raise ValueError("TrialStorage(shared_init=True) is not supported: its other processes would read the "
                             "scratch folder with tensordict's load_memmap, which can unpickle data; the sequence "
                             "replay is written by one process")
        super().__init__(max_size, **kwargs)

    def attach(self, buffer) -> None:
        check_reader(buffer)
        super().attach(buffer)

    def _init(self, data) -> None:
        """TorchRL's lazy allocation at the first write, without the INFO line it prints on every run's start
        ("Initialized LazyMemmapStorage with ... shape"); its warnings still show."""
        torchrl_log = logging.getLogger("torchrl")
        level = torchrl_log.level
        torchrl_log.setLevel(max(level, logging.WARNING))
        try:
            super()._init(data)
        finally:
            torchrl_log.setLevel(level)

    def loads(self, path) -> None:
        raise UnsafeFileError(
            f"TrialStorage.loads({path}): refused without reading it: TorchRL's storage format is read with "
            f"tensordict's load_memmap, which can unpickle (run) code a folder holds. Load a replay dump with "
            f"SequenceReplayBuffer.loads(path) (a folder written by SequenceReplayBuffer.dumps)")

    def load(self, path) -> None:
        self.loads(path)


class SequenceReplayBuffer(ReplayBuffer):
    """ReplayBuffer holding whole trials (build it with :func:`make_sequence_replay`); ``len(rb)`` = stored steps.

    Keys: ``extend`` stores every key and reads ``("next", "done")``, ``is_init``, ``("collector", "traj_ids")`` and
    ``("collector", "mask")`` to cut trials, adding ``("replay", "trial_id")`` and ``("replay", "step")``; ``sample``
    returns ``[B, T]`` windows plus ``mask`` (False on padding), also as TorchRL's ``("collector", "mask")``."""

    def __init__(self, *, storage, writer: TrialWriter, sampler: TrialWindowSampler, batch_size: int | None,
                 trial_transform: TrialTransform | None = None, mask_key: NestedKey = "mask", **kwargs):
        if not isinstance(writer, TrialWriter) or not isinstance(sampler, TrialWindowSampler):
            raise ValueError("SequenceReplayBuffer needs a TrialWriter and a TrialWindowSampler")
        if storage.max_size != writer.index.capacity:
            raise ValueError(f"storage max_size={storage.max_size} != writer capacity={writer.index.capacity}")
        if storage.ndim != 1:
            raise ValueError(f"SequenceReplayBuffer needs a flat storage (ndim=1), got ndim={storage.ndim}")
        super().__init__(storage=storage, writer=writer, sampler=sampler, batch_size=batch_size, **kwargs)
        self._sampler.attach(self._writer.index)
        self.trial_transform, self.mask_key = trial_transform, mask_key

    @property
    def seq_len(self) -> int:
        return self._sampler.seq_len

    @property
    def capacity_steps(self) -> int:
        return self._writer.index.capacity

    def num_trials(self) -> int:
        """Number of finished trials (or snippets) that can be sampled."""
        return int(self._writer.index.sampleable()[0].numel())

    def trial_lengths(self) -> torch.Tensor:
        """Lengths of the sampleable trials, oldest first."""
        return self._writer.index.sampleable()[1]

    def extend_trials(self, trials: TensorDictBase, lengths: torch.Tensor) -> torch.Tensor:
        """Write whole trials given as their concatenation ``[sum(lengths)]`` (see ``load_offline_trials``)."""
        with self._replay_lock, self._write_lock:
            return self._writer.write_trials(trials, lengths)

    def num_open_trials(self) -> int:
        """Number of in-progress trials (steps stored, trial not yet ended), e.g. in flight in collector workers."""
        with self._replay_lock, self._write_lock:
            return self._writer.num_open_trials()

    def end_trials(self) -> int:
        """Close every in-progress trial, keeping its steps (e.g. after ``loads()`` on resume); returns how many."""
        with self._replay_lock, self._write_lock:
            return self._writer.end_trials()

    def register_write_hook(self, hook):
        """See :meth:`TrialWriter.register_write_hook`."""
        return self._writer.register_write_hook(hook)

    def dumps(self, path) -> None:
        """Save the buffer into ``path`` (new, empty or an earlier dump, replaced atomically; see ``dump_replay``)."""
        with self._replay_lock, self._write_lock:
            dump_replay(self, path)

    def loads(self, path) -> None:
        """Load a folder written by :meth:`dumps` (same ``capacity_steps`` and ``max_trial_len``), after checking
        every file and field (:func:`~torchrl_amago.data.replay_dump.load_replay`); ``load`` is the same method."""
        self.synchronize()
        with self._futures_lock:
            self._clear_prefetch_queue_locked()
            with self._replay_lock, self._write_lock:
                load_replay(self, path)

    def _sample(self, batch_size: int) -> tuple[TensorDictBase, dict]:
        with self._replay_lock, self._write_lock:
            if self.trial_transform is None:
                index, info = self._sampler.sample(self._storage, batch_size)
                info["index"] = index
            else:
                index, info = self._sampler.sample_whole_trials(batch_size)
            data = self._collate_fn(self._storage.get(index))
        if self.trial_transform is not None:
            data, info = self._window_transformed(data, info.pop("length"), info)
        with data.unlock_() if data.is_locked else contextlib.nullcontext():
            set_masks(data, info["mask"], self.mask_key)
        if self._transform is not None and len(self._transform):
            with data.unlock_():
                data = self._transform(data)
        return data, info

    def _window_transformed(self, flat: TensorDictBase, lengths: torch.Tensor, info: dict):
        trials = [self.trial_transform(tr) for tr in flat.split(lengths.tolist(), 0)]
        new_len = torch.tensor([tr.batch_size[0] for tr in trials], dtype=torch.long)
        if bool((new_len <= 0).any()):
            raise ValueError("trial_transform returned an empty trial")
        starts, offsets, mask = self._sampler.windows(new_len)
        data = torch.stack([tr[o] for tr, o in zip(trials, offsets)], 0)
        info.update(start=starts, mask=mask, length=new_len)
        return data, info


def set_masks(data: TensorDictBase, mask: torch.Tensor, mask_key: NestedKey = K.MASK) -> None:
    """Write the ``[B, T]`` validity ``mask`` at ``mask_key`` and at TorchRL's ``("collector", "mask")``."""
    data.set(mask_key, mask)
    if mask_key != K.TORCHRL_MASK:
        data.set(K.TORCHRL_MASK, mask)


def make_sequence_replay(capacity_steps: int, seq_len: int, batch_size: int | None, *, scratch_dir: str | None = None,
                         sampling: str = "trial", padded_sampling: str = "none",
                         trial_transform: TrialTransform | None = None, max_trial_len: int | None = None,
                         trim: bool = True, done_key: NestedKey = ("next", "done"),
                         init_key: NestedKey | None = "is_init", traj_key: NestedKey | None = ("collector", "traj_ids"),
                         valid_key: NestedKey | None = K.TORCHRL_MASK, mask_key: NestedKey = K.MASK,
                         trial_id_key: NestedKey | None = K.TRIAL_ID, trial_step_key: NestedKey | None = K.TRIAL_STEP,
                         transform=None, generator: torch.Generator | None = None,
                         prefetch: int | None = None) -> SequenceReplayBuffer:
    """Sequence replay on disk (``LazyMemmapStorage``) that samples ``[batch_size, seq_len]`` windows.

    Args:
        capacity_steps: FIFO capacity in timesteps; the oldest trials are dropped whole when overwritten.
        seq_len: window length T. batch_size: windows per ``sample()``.
        scratch_dir: folder of the memmap files (kept); ``None``: a temporary folder, deleted at exit.
        sampling, padded_sampling, trim: see :class:`TrialWindowSampler`.
        trial_transform: callable applied to each sampled whole trial ``[L]`` before windowing.
        max_trial_len, done_key, init_key, traj_key, valid_key, trial_id_key, trial_step_key: see
            :class:`TrialWriter`. mask_key: where ``sample`` writes the mask.
        transform: a TorchRL transform of the ``[B, T]`` batch. generator: the sampling RNG (checkpointed)."""
    temp = scratch_dir is None
    if temp:  # an explicit temp folder, so a buffer restored by loads() is on disk too (not anonymous memory)
        scratch_dir = tempfile.mkdtemp(prefix="torchrl_amago_replay_")
    storage = TrialStorage(capacity_steps, scratch_dir=scratch_dir, auto_cleanup=temp)
    writer = TrialWriter(capacity_steps, done_key=done_key, init_key=init_key, traj_key=traj_key,
                         max_trial_len=max_trial_len, trial_id_key=trial_id_key, trial_step_key=trial_step_key,
                         valid_key=valid_key)
    sampler = TrialWindowSampler(seq_len, sampling=sampling, padded_sampling=padded_sampling, trim=trim)
    return SequenceReplayBuffer(storage=storage, writer=writer, sampler=sampler, batch_size=batch_size,
                                trial_transform=trial_transform, mask_key=mask_key, transform=transform,
                                generator=generator, prefetch=prefetch)
