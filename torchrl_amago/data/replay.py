"""Sequence replay: a TorchRL ReplayBuffer on LazyMemmapStorage that samples [B, T] windows of one trial.

``rb.extend(collector_batch)`` takes what a TorchRL Collector yields (``[N, T]`` from a batched env, ``[T]``
from an unbatched one; trials may span batches) and writes it to disk at once. Trials are reassembled by the
collector's ``("collector", "traj_ids")``, so batches of a multi-process collector (``MultiAsyncCollector``,
``MultiSyncCollector``) may interleave in any order (see :mod:`torchrl_amago.data.writer`). ``rb.sample()`` returns a
TensorDict ``[B, T]`` with every stored key (root and ``"next"``) plus ``"mask"`` (False on right padding
past a trial's end). ``rb.dumps(path)`` / ``rb.loads(path)`` checkpoint the memmaps, the trial table, the
in-progress trials of every env and the sampling RNG, in a format that holds tensors and plain values only
(:mod:`torchrl_amago.data.replay_persist`; ``loads`` refuses any other file, see :mod:`~torchrl_amago.data.safe_files`).

With a ``trial_transform`` (e.g. :class:`~torchrl_amago.data.relabel.HindsightRelabel`) each sampled trial
is read whole, transformed (it may get shorter), and only then cut into a window, as AMAGO relabels whole
trajectory files before slicing.
"""
from __future__ import annotations

import contextlib
import tempfile
from typing import Callable

import torch
from tensordict import TensorDictBase
from tensordict.utils import NestedKey
from torchrl.data import ReplayBuffer

from .. import keys as K
from .replay_persist import dump_replay, load_replay
from .sampler import TrialWindowSampler
from .storage import TrialStorage
from .writer import TrialWriter

TrialTransform = Callable[[TensorDictBase], TensorDictBase]


class SequenceReplayBuffer(ReplayBuffer):
    """ReplayBuffer holding whole trials; use :func:`make_sequence_replay` to build one.

    Beyond the ReplayBuffer API: :meth:`num_trials`, :meth:`extend_trials` (whole trials, e.g. offline
    data), :meth:`num_open_trials` / :meth:`end_trials` (count / close in-progress trials), and ``len(rb)`` =
    stored steps.

    Keys: ``extend`` stores every key of the batch (root and ``"next"``) and reads ``("next", "done")``,
    ``is_init`` and ``("collector", "traj_ids")`` to cut trials (of a padded ``Collector(split_trajs=True)`` batch,
    only the steps ``("collector", "mask")`` marks valid are stored, without the mask); it adds
    ``("replay", "trial_id")`` and ``("replay", "step")`` to every stored step. ``sample`` returns them as
    ``[B, T]`` windows plus ``mask`` (False on padding), also written as TorchRL's ``("collector", "mask")`` so that
    TorchRL losses (``loss_mask_key``) leave padding out too. The names are arguments of
    :func:`make_sequence_replay`.
    """

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
        self.trial_transform = trial_transform
        self.mask_key = mask_key

    # ------------------------------------------------------------------ info
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

    # ------------------------------------------------------------------ writing
    def extend_trials(self, trials: TensorDictBase, lengths: torch.Tensor) -> torch.Tensor:
        """Write whole trials given as their concatenation ``[sum(lengths)]`` (see ``load_offline_trials``)."""
        with self._replay_lock, self._write_lock:
            return self._writer.write_trials(trials, lengths)

    def num_open_trials(self) -> int:
        """Number of in-progress trials (steps stored, trial not yet ended), e.g. in flight in collector workers."""
        with self._replay_lock, self._write_lock:
            return self._writer.num_open_trials()

    def end_trials(self) -> int:
        """Close every in-progress trial so it can be sampled, keeping its steps as a shorter finished trial.

        Call it when the collector changes (its trajectory ids restart at 0), e.g. right after ``loads()`` on
        resume, or at the end of collection. Returns the number of trials closed (0 if none was in progress).
        """
        with self._replay_lock, self._write_lock:
            return self._writer.end_trials()

    def register_write_hook(self, hook):
        """Call ``hook(first_position, steps)`` before every storage write (see
        :meth:`TrialWriter.register_write_hook`); returns a handle whose ``remove()`` unregisters it."""
        return self._writer.register_write_hook(hook)

    # ------------------------------------------------------------------ checkpointing
    def dumps(self, path) -> None:
        """Save the storage (copies of the memmaps), trial table, in-progress trials, sampler settings, RNG, batch
        size and transform state to the folder ``path``; works on an empty buffer too. The format is
        :func:`~torchrl_amago.data.replay_persist.dump_replay`'s: memmaps and one ``torch.save`` file of tensors and
        plain values, never a pickle. ``path`` must be new, empty or an earlier dump, which is replaced only once
        the new dump is complete (written beside it, then renamed into place); any other folder is refused."""
        with self._replay_lock, self._write_lock:
            dump_replay(self, path)

    def loads(self, path) -> None:
        """Load a folder written by :meth:`dumps` into this buffer (same ``capacity_steps`` and ``max_trial_len``).

        Reads tensors and raw memmaps only: any other file in the folder (a pickle, a tensordict ``meta.json``, a
        ``transform.t``, a symlink), any object other than tensors and plain values in ``replay_state.pt``, a state
        that is not consistent (trial table, write count, storage length, layout; see
        :func:`~torchrl_amago.data.replay_persist.validate_replay_state`) and a memmap of the wrong size raise an
        error naming the file (and field) before anything is loaded
        (:func:`~torchrl_amago.data.replay_persist.load_replay`). TorchRL's own dump format is refused;
        ``load`` is the same method."""
        self.synchronize()
        with self._futures_lock:
            self._clear_prefetch_queue_locked()
            with self._replay_lock, self._write_lock:
                load_replay(self, path)

    # ------------------------------------------------------------------ sampling
    def _sample(self, batch_size: int) -> tuple[TensorDictBase, dict]:
        with self._replay_lock, self._write_lock:
            if self.trial_transform is None:
                index, info = self._sampler.sample(self._storage, batch_size)
                data = self._collate_fn(self._storage.get(index))
                info["index"] = index
            else:
                index, info = self._sampler.sample_whole_trials(batch_size)
                flat = self._collate_fn(self._storage.get(index))
        if self.trial_transform is not None:
            data, info = self._window_transformed(flat, info.pop("length"), info)
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
    """Write the ``[B, T]`` validity ``mask`` (False on padding) at ``mask_key`` and at TorchRL's
    ``("collector", "mask")`` (the same tensor), so AMAGOLoss and TorchRL losses leave the same steps out."""
    data.set(mask_key, mask)
    if mask_key != K.TORCHRL_MASK:
        data.set(K.TORCHRL_MASK, mask)


def make_sequence_replay(
    capacity_steps: int,
    seq_len: int,
    batch_size: int | None,
    *,
    scratch_dir: str | None = None,
    sampling: str = "trial",
    padded_sampling: str = "none",
    trial_transform: TrialTransform | None = None,
    max_trial_len: int | None = None,
    trim: bool = True,
    done_key: NestedKey = ("next", "done"),
    init_key: NestedKey | None = "is_init",
    traj_key: NestedKey | None = ("collector", "traj_ids"),
    valid_key: NestedKey | None = K.TORCHRL_MASK,
    mask_key: NestedKey = K.MASK,
    trial_id_key: NestedKey | None = K.TRIAL_ID,
    trial_step_key: NestedKey | None = K.TRIAL_STEP,
    transform=None,
    generator: torch.Generator | None = None,
    prefetch: int | None = None,
) -> SequenceReplayBuffer:
    """Sequence replay on disk (``LazyMemmapStorage``) that samples ``[batch_size, seq_len]`` windows.

    Args:
        capacity_steps: FIFO capacity in timesteps; the oldest trials are dropped whole when overwritten.
        seq_len: window length T (AMAGO's ``max_seq_len``; each window step carries its ``"next"`` view).
        batch_size: windows per ``sample()``.
        scratch_dir: folder for the memmap files (kept); ``None`` = a temporary folder deleted at exit
            (or when the buffer is garbage-collected).
        sampling: ``"trial"`` (uniform over trials, the original) or ``"timestep"`` (proportional to length).
        padded_sampling: ``"none"`` (start in ``[0, L-T]``) or ``"right"`` (start in ``[0, L-1]``).
        trial_transform: callable applied to each sampled whole trial ``[L]`` before windowing.
        max_trial_len: store long trials as non-overlapping snippets of at most this many steps.
        trim: cut each batch to its longest valid window (``[B, T']``, ``T' <= seq_len``); ``False`` always
            returns ``seq_len`` steps (fixed shapes, e.g. for ``torch.compile`` without recompilation).
        done_key / init_key / traj_key / mask_key: key names (trial end, hard-reset flag, the collector's
            trajectory id, output mask). With trajectory ids in the data, open trials are keyed by them and
            continue wherever their id arrives (any row, worker or batch); without them, by row. The mask is also
            written as TorchRL's ``("collector", "mask")``.
        valid_key: the padding mask of ``Collector(split_trajs=True)`` batches (False on padding): only valid steps
            are stored, and the mask itself is not (``None``: store the key like any other).
        trial_id_key / trial_step_key: stored with every step: its trial's id and its offset in the trial, for
            TorchRL's ``SliceSampler(traj_key=..., step_key=..., fragmented=True)`` (see :class:`TrialWriter`).
        transform: a TorchRL transform applied to the ``[B, T]`` batch (sample time).
        generator: RNG for sampling (checkpointed by ``dumps``).
    """
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
