"""TrialWriter: writes each collector batch into a circular storage at once (FIFO) while a
:class:`~torchrl_amago.data.trial_index.TrialIndex` records each step's trial. A trial continues by the collector's
trajectory id (``("collector", "traj_ids")``) in whatever row, worker or batch it arrives (by row for data without
ids); padded ``split_trajs=True`` batches store their valid steps only. Rules: docs/api/data.md, "Semantics"."""
from __future__ import annotations

import errno
import json
import os
import shutil
from collections import OrderedDict
from pathlib import Path
from typing import Callable

import torch
from tensordict import LazyStackedTensorDict, TensorDictBase
from tensordict.utils import NestedKey
from torch.utils.hooks import RemovableHandle
from torchrl.data.replay_buffers.writers import Writer

from .. import keys as K
from .replay_persist import save_durably, write_durably, write_error
from .safe_files import load_tensors
from .trial_index import TrialIndex, check_index_state

WriteHook = Callable[[int, int], None]


def plan_pieces(done: torch.Tensor, init: torch.Tensor | None, open_unit: torch.Tensor, open_len: torch.Tensor,
                max_len: int | None, traj: torch.Tensor | None = None, open_traj: torch.Tensor | None = None,
                valid: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Split ``[N, T]`` rows into pieces that each belong to one unit (vectorised, no per-env loop). A unit starts
    after ``done``, at ``init``, where ``traj`` changes (or differs from ``open_traj``, the id of each row's open unit),
    where a row has no open unit, and every ``max_len`` steps; every row start starts a piece. ``valid`` [N, T]: each
    row's valid prefix (the padding is left out). Returns flat ``pos``, ``length``, ``row``, ``is_new``,
    ``ends_done``, ``cut`` (a later piece of the row closes the unit) and ``closes_open`` [N]."""
    n_env, t_len = done.shape
    t = torch.arange(t_len)
    start = torch.zeros_like(done)
    start[:, 1:] = done[:, :-1]
    if init is not None:
        start |= init
    start[:, 0] |= open_unit < 0
    if traj is not None:
        start[:, 1:] |= traj[:, 1:] != traj[:, :-1]
        if open_traj is not None:
            start[:, 0] |= traj[:, 0] != open_traj
    if valid is not None:
        start &= valid
    if max_len is not None:
        last_start = torch.cummax(torch.where(start, t, -1), dim=1).values
        offset = torch.where(last_start >= 0, t - last_start, open_len[:, None] + t)
        snip = (offset > 0) & (offset % max_len == 0)
        start |= snip if valid is None else snip & valid
    piece = start.clone()
    piece[:, 0] = True
    if valid is not None:
        piece[:, 1:] |= valid[:, :-1] & ~valid[:, 1:]  # the padding of a row is a piece of its own, left out
    pos = piece.reshape(-1).nonzero().squeeze(-1)
    length = torch.diff(pos, append=torch.tensor([n_env * t_len]))
    end = pos + length - 1
    row_end = t_len - 1 if valid is None else valid.sum(1)[pos // t_len] - 1
    plan = {"pos": pos, "length": length, "row": pos // t_len, "is_new": start.reshape(-1)[pos],
            "ends_done": done.reshape(-1)[end], "cut": (end % t_len) < row_end,
            "closes_open": (open_unit >= 0) & start[:, 0]}
    if valid is not None:
        flat_valid = valid.reshape(-1)
        keep = flat_valid[pos]
        plan = {k: (v if k == "closes_open" else v[keep]) for k, v in plan.items()}
        plan["pos"] = (torch.cumsum(flat_valid, 0) - 1)[plan["pos"]]  # positions among the valid steps
    return plan


def reserve_rows(storage: TensorDictBase, lo: int, hi: int) -> None:
    """Allocate the disk blocks of rows ``[lo, hi)`` of every memmap of ``storage`` (``posix_fallocate``; where that
    is missing, a check of the free space); a full disk raises an OSError naming the file, before any row is
    written."""
    for _, v in storage.items(include_nested=True, leaves_only=True):
        fn = getattr(v, "filename", None)
        if fn is None or not v.numel():
            continue
        row = v[0].numel() * v.element_size()
        try:
            fd = os.open(fn, os.O_RDWR)
            try:
                if hasattr(os, "posix_fallocate"):
                    os.posix_fallocate(fd, lo * row, (hi - lo) * row)
                elif shutil.disk_usage(os.path.dirname(fn)).free < (hi - lo) * row:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            finally:
                os.close(fd)
        except OSError as e:
            if e.errno in (errno.EOPNOTSUPP, errno.EINVAL, getattr(errno, "ENOTSUP", -1)):
                continue  # a file system without fallocate: pages are allocated as they are written
            raise write_error(fn, e, f"rows {lo}..{hi} of the replay's storage need {(hi - lo) * row} more bytes in "
                                     f"it; nothing of this batch was stored") from e


def _flag(data: TensorDictBase, key: NestedKey, shape: torch.Size) -> torch.Tensor:
    v = data.get(key)
    if v.numel() != shape.numel():
        raise ValueError(f"key {key!r} must hold one flag per step (shape {tuple(shape)} or "
                         f"{tuple(shape) + (1,)}), got shape {tuple(v.shape)}")
    v = v.reshape(shape)
    if v.dtype != torch.bool:
        bad = (v != 0) & (v != 1)
        if bool(bad.any()):
            where = tuple(int(i) for i in bad.nonzero()[0])
            raise ValueError(f"key {key!r} must hold flags (bool or 0/1), got {v[where].item()!r} at step {where}")
    return v.bool()


class TrialWriter(Writer):
    """FIFO writer that keeps the trial structure of collector data (see the module docstring).

    Args:
        capacity: storage size in steps (the storage's ``max_size``).
        done_key: the flag that ends a trial. init_key: the hard-reset flag (starts a trial; ``None``: ignored).
        traj_key: the collector's trajectory id (``None``: continue trials by row).
        max_trial_len: store longer trials as consecutive snippets of at most this many steps.
        trial_id_key / trial_step_key: written with every step (int64): its unit's id and its offset in the unit,
            for TorchRL's ``SliceSampler(..., fragmented=True)``; ``None`` writes neither.
        valid_key: the padding mask of ``Collector(split_trajs=True)`` batches, not stored: only valid steps are
            (``None``: store it as any other key).

    Keys in: ``done_key``, ``init_key``, ``traj_key``, ``valid_key``; keys out: ``trial_id_key``, ``trial_step_key``."""

    def __init__(self, capacity: int, *, done_key: NestedKey = ("next", "done"),
                 init_key: NestedKey | None = "is_init", traj_key: NestedKey | None = ("collector", "traj_ids"),
                 max_trial_len: int | None = None, trial_id_key: NestedKey | None = K.TRIAL_ID,
                 trial_step_key: NestedKey | None = K.TRIAL_STEP, valid_key: NestedKey | None = K.TORCHRL_MASK):
        super().__init__()
        if max_trial_len is not None and not 0 < max_trial_len <= capacity:
            raise ValueError(f"max_trial_len must be in [1, capacity_steps={capacity}], got {max_trial_len}")
        self.index = TrialIndex(capacity)
        self.done_key, self.init_key, self.traj_key, self.valid_key = done_key, init_key, traj_key, valid_key
        self.max_trial_len, self.trial_id_key, self.trial_step_key = max_trial_len, trial_id_key, trial_step_key
        self._write_count = 0
        self._write_count_offset = 0  # _write_count - index.write_count (empty(empty_write_count=False) keeps counting)
        self._write_hooks: OrderedDict[int, WriteHook] = OrderedDict()
        self._reserved: tuple = (None, 0)  # (the storage's memmaps, rows whose disk space is reserved)
        self._dtypes: tuple = (None, {})  # (the storage's memmaps, their dtypes)

    def register_write_hook(self, hook: WriteHook) -> RemovableHandle:
        """Call ``hook(first_position, steps)`` before every storage write (its first global position and number of
        steps; an exception stops the write). Returns a handle whose ``remove()`` unregisters it."""
        if not callable(hook):
            raise TypeError(f"register_write_hook needs a callable, got {type(hook).__name__}")
        handle = RemovableHandle(self._write_hooks)
        self._write_hooks[handle.id] = hook
        return handle

    def add(self, data: TensorDictBase) -> torch.Tensor:
        """One step of an unbatched env."""
        return self.extend(data.unsqueeze(0))

    def extend(self, data: TensorDictBase) -> torch.Tensor:
        """Write collector output ``[T]`` or ``[..., N, T]`` (time is the last batch dim)."""
        if not isinstance(data, TensorDictBase):
            raise ValueError(f"the sequence replay stores TensorDicts, got {type(data).__name__}")
        if data.batch_dims == 0:
            raise ValueError("extend() needs a time dimension: got a TensorDict with batch_size []; "
                             "use add() for a single step")
        if self.done_key not in data.keys(include_nested=True):
            raise ValueError(f"extend() needs the trial-end flag {self.done_key!r} in the data")
        if isinstance(data, LazyStackedTensorDict):  # e.g. stacked worker outputs
            data = data.contiguous()
        rows = data.reshape(-1, data.batch_size[-1])
        has = lambda key: key is not None and key in rows.keys(include_nested=True)  # noqa: E731
        valid = None
        if has(self.valid_key):
            valid = _flag(rows, self.valid_key, rows.batch_size)
            rows, valid = self._valid_rows(rows.exclude(self.valid_key), valid)
        n_env, t_len = rows.batch_size
        done = _flag(rows, self.done_key, rows.batch_size)
        init = _flag(rows, self.init_key, rows.batch_size) if has(self.init_key) else None
        traj = rows.get(self.traj_key).reshape(n_env, t_len).long() if has(self.traj_key) else None
        idx = self.index
        if traj is not None:
            if idx.env_traj is None:  # switch to trials keyed by trajectory id
                if idx.num_open():
                    raise ValueError(f"extend() got data with trajectory ids {self.traj_key!r} but trials written "
                                     f"without them are in progress; call end_trials() first")
                idx.env_unit, idx.env_traj = torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
            return self._write(rows, done, init, online=True, traj=traj, valid=valid)
        if valid is not None:
            raise ValueError(
                f"extend() got a padded batch ({self.valid_key!r} False on some steps, as Collector(split_trajs=True) "
                f"writes) without trajectory ids {self.traj_key!r}: its rows are trajectories, not envs, so trials "
                f"cannot be continued by row; keep the collector's trajectory ids (traj_key=('collector', "
                f"'traj_ids'), the default) or collect with split_trajs=False")
        if idx.env_traj is not None:  # trials keyed by trajectory id are open; this data has none
            if idx.num_open():
                raise ValueError(f"extend() got data without trajectory ids {self.traj_key!r} but trials keyed by "
                                 f"them are in progress; call end_trials() first")
            idx.env_unit = idx.env_traj = None
        if idx.env_unit is None or idx.env_unit.numel() != n_env:
            if idx.num_open():
                raise ValueError(f"extend() got data from {n_env} envs but {idx.env_unit.numel()} envs have trials "
                                 f"in progress; call end_trials() first or use one buffer per collector layout")
            idx.env_unit = torch.full((n_env,), -1, dtype=torch.long)
        return self._write(rows, done, init, online=True)

    def _valid_rows(self, rows: TensorDictBase, valid: torch.Tensor) -> tuple[TensorDictBase, torch.Tensor | None]:
        """The rows holding a valid step, and their mask (None: all valid); a row's valid steps must come first."""
        if bool(valid.all()):
            return rows, None
        gap = valid[:, 1:] & ~valid[:, :-1]
        if bool(gap.any()):
            r, t = (int(i) for i in gap.nonzero()[0])
            raise ValueError(f"extend(): {self.valid_key!r} marks row {r} valid again at step {t + 1} after padding; "
                             f"only right padding (valid steps first, as Collector(split_trajs=True) writes) is read")
        keep = valid.any(1)
        if not bool(keep.all()):
            rows, valid = rows[keep], valid[keep]
        return rows, valid

    def write_trials(self, data: TensorDictBase, lengths: torch.Tensor) -> torch.Tensor:
        """Write whole, finished trials (their concatenation, their ``lengths``); open trials stay untouched."""
        lengths = torch.as_tensor(lengths, dtype=torch.long).reshape(-1)
        if data.batch_dims != 1 or int(lengths.sum()) != data.batch_size[0] or bool((lengths <= 0).any()):
            raise ValueError(f"write_trials() needs flat data [sum(lengths)] and positive lengths; got batch "
                             f"{tuple(data.batch_size)} and lengths summing to {int(lengths.sum())}")
        done = torch.zeros(1, data.batch_size[0], dtype=torch.bool)
        done[0, lengths.cumsum(0) - 1] = True
        return self._write(data.unsqueeze(0), done, None, online=False)

    def num_open_trials(self) -> int:
        """Number of in-progress (unfinished) trials of the online stream, e.g. in flight in collector workers."""
        return self.index.num_open()

    def end_trials(self) -> int:
        """Finish every in-progress trial (e.g. before changing collectors; its steps stay); returns how many closed."""
        idx = self.index
        closed = idx.num_open()
        if idx.env_unit is not None:
            idx.finish(idx.env_unit[idx.env_unit >= 0])
            idx.env_unit = idx.env_traj = None
        return closed

    def _write(self, rows: TensorDictBase, done: torch.Tensor, init: torch.Tensor | None,
               online: bool, traj: torch.Tensor | None = None, valid: torch.Tensor | None = None) -> torch.Tensor:
        idx = self.index
        n_env, t_len = done.shape
        n = n_env * t_len if valid is None else int(valid.sum())
        if n > idx.capacity:
            raise ValueError(f"one write of {n} steps exceeds capacity_steps={idx.capacity}")
        gpos0 = idx.write_count
        idx.prune(gpos0 + n - idx.capacity)  # units that this write overwrites are dropped whole
        last_traj = None
        if traj is not None:
            last_traj = traj[:, -1] if valid is None else traj[torch.arange(n_env), valid.sum(1) - 1]
        open_unit = torch.full((n_env,), -1, dtype=torch.long)
        if online:
            open_unit = idx.env_unit if traj is None else self._lookup_open(traj[:, 0], last_traj)
        open_len = torch.zeros(n_env, dtype=torch.long)
        has = open_unit >= 0
        open_len[has] = idx.length_of(open_unit[has])
        plan = plan_pieces(done, init, open_unit, open_len, self.max_trial_len, traj, valid=valid)
        # unit of every piece (new ones get the next ids, as new_units allocates them) and its offset in the unit
        is_new = plan["is_new"]
        unit = torch.empty_like(plan["pos"])
        unit[is_new] = idx.unit_base + idx.num_units + torch.arange(int(is_new.sum()))
        unit[~is_new] = open_unit[plan["row"][~is_new]]

        slots = (gpos0 + torch.arange(n)) % idx.capacity
        flat = rows.reshape(-1)
        if valid is not None:
            flat = flat[valid.reshape(-1)]
        if flat.device is not None and flat.device.type != "cpu":
            flat = flat.cpu()
        if self._stores_trial_keys():
            first = torch.where(is_new, 0, open_len[plan["row"]])  # offset of each piece's first step
            flat = flat.copy()  # new entries on a shallow copy: the caller's TensorDict is left as it was
            flat.set(self.trial_id_key, torch.repeat_interleave(unit, plan["length"]))
            flat.set(self.trial_step_key, torch.arange(n) + torch.repeat_interleave(first - plan["pos"],
                                                                                    plan["length"]))
        self._check_dtypes(flat)
        self._reserve(flat, min(gpos0 + n, idx.capacity))
        for hook in tuple(self._write_hooks.values()):
            hook(gpos0, n)
        self._storage.set(slots, flat)
        idx.write_count += n
        self._write_count += n
        for reader in self._storage._attached_entities_iter():  # e.g. a SliceSampler's buffer sharing the storage
            reader.mark_update(slots)

        idx.finish(open_unit[plan["closes_open"]])
        idx.new_units(gpos0 + plan["pos"][is_new])  # the ids `unit` already holds
        idx.add_segments(unit, gpos0 + plan["pos"], plan["length"])
        finished = plan["ends_done"] | plan["cut"] | (not online)
        if self.max_trial_len is not None:
            finished = finished | (idx.length_of(unit) >= self.max_trial_len)
        idx.finish(unit[finished])
        if online:
            last = torch.searchsorted(plan["row"], torch.arange(n_env), right=True) - 1
            row_open = torch.where(finished[last], -1, unit[last])
            if traj is None:
                idx.env_unit = row_open
            else:
                self._update_open(traj if valid is None else traj[valid], last_traj, open_unit, row_open)
        return slots

    def _check_dtypes(self, flat: TensorDictBase) -> None:
        """Refuse data whose dtype differs from the stored key's (a copy would cast it silently, and a layout loaded
        from a file that declares another dtype would reinterpret what is stored)."""
        data = getattr(self._storage, "_storage", None) if self._storage.initialized else None
        if data is None:
            return
        if self._dtypes[0] is not data:
            self._dtypes = (data, {k: v.dtype for k, v in data.items(include_nested=True, leaves_only=True)})
        stored = self._dtypes[1]
        for k, v in flat.items(include_nested=True, leaves_only=True):
            if k in stored and v.dtype != stored[k]:
                raise ValueError(f"extend(): key {'/'.join(k) if isinstance(k, tuple) else k!r} holds {v.dtype}, the "
                                 f"replay stores {stored[k]} (a storage created or loaded with another layout); "
                                 f"nothing was stored")

    def _reserve(self, flat: TensorDictBase, rows: int) -> None:
        """Before the first write to storage rows below `rows`: their disk space (and as much again ahead, up to the
        capacity), so a full disk is an OSError naming the file, not a SIGBUS on a sparse memmap page
        (:func:`reserve_rows`; nothing is written yet)."""
        st = self._storage
        if not st.initialized and hasattr(st, "scratch_dir"):
            try:
                st._init(flat[0])
            except (OSError, RuntimeError) as e:  # torch.from_file reports a full disk as a RuntimeError
                raise write_error(st.scratch_dir, e, "the replay's memmaps could not be made there; nothing of this "
                                                     "batch was stored") from e
        data = getattr(st, "_storage", None)
        done = self._reserved[1] if self._reserved[0] is data else 0
        if rows > done and data is not None:
            rows = min(self.index.capacity, max(rows, 2 * done, 1024))  # ahead, doubling: few calls in all
            reserve_rows(data, done, rows)
            self._reserved = (data, rows)

    def _stores_trial_keys(self) -> bool:
        """Write ``trial_id_key`` / ``trial_step_key``, unless disabled or the storage was written without them."""
        if self.trial_id_key is None or self.trial_step_key is None:
            return False
        if not self._storage.initialized:
            return True
        stored = self._storage._storage.keys(include_nested=True)
        return self.trial_id_key in stored and self.trial_step_key in stored

    def _lookup_open(self, first: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        """[N] open unit continued by each row (keyed by its ``first`` trajectory id), -1 = none."""
        n_env = first.shape[0]
        first, last = first.contiguous(), last.contiguous()
        if torch.unique(first).numel() != n_env or torch.unique(last).numel() != n_env:
            raise ValueError(f"two rows of one batch share a trajectory id {self.traj_key!r}: ids must be unique "
                             f"per row (got first ids {first.tolist()}, last ids {last.tolist()}). Padded batches "
                             f"(Collector(split_trajs=True)) need their mask {self.valid_key!r}; if the ids are not "
                             f"the collector's trajectory ids, build the buffer with traj_key=None to continue "
                             f"trials by row")
        keys, units = self.index.env_traj, self.index.env_unit
        if keys.numel() == 0:
            return torch.full((n_env,), -1, dtype=torch.long)
        p = torch.searchsorted(keys, first).clamp(max=keys.numel() - 1)  # keys are sorted and unique
        return torch.where(keys[p] == first, units[p], -1)

    def _update_open(self, traj: torch.Tensor, last: torch.Tensor, looked_up: torch.Tensor,
                     row_open: torch.Tensor) -> None:
        """Replace the open entries whose ids this batch wrote by each row's open unit, keyed by its ``last`` id."""
        idx = self.index
        keys, units = idx.env_traj, idx.env_unit
        touched = torch.isin(keys, traj.reshape(-1))
        # an open unit whose id reappears in this batch without being continued is stale (id reused): close it
        stale = touched & ~torch.isin(units, looked_up)
        idx.finish(units[stale & (units >= 0)])
        keep = ~touched & (units >= 0)
        new = row_open >= 0
        keys = torch.cat([keys[keep], last[new]])
        units = torch.cat([units[keep], row_open[new]])
        order = torch.argsort(keys)
        idx.env_traj, idx.env_unit = keys[order], units[order]

    def _empty(self, empty_write_count: bool = True) -> None:
        self.index.reset()
        if empty_write_count:
            self._write_count = 0
        self._write_count_offset = self._write_count

    def state_dict(self) -> dict:
        return {"index": self.index.state_dict(), "_write_count": self._write_count,
                "_write_count_offset": self._write_count_offset, "max_trial_len": self.max_trial_len}

    def check_compatible(self, state_dict: dict) -> None:
        """Raise ValueError if a checkpoint was written with another capacity or max_trial_len."""
        cap = state_dict["index"].get("capacity")
        if isinstance(cap, bool) or not isinstance(cap, int):
            raise ValueError(f"index.capacity: expected an integer, got {cap!r}")
        if cap != self.index.capacity:
            raise ValueError(f"index.capacity: checkpoint was written by a buffer with capacity_steps={cap}, "
                             f"this buffer has capacity_steps={self.index.capacity}")
        if state_dict.get("max_trial_len") != self.max_trial_len:
            raise ValueError(f"max_trial_len: checkpoint has max_trial_len={state_dict.get('max_trial_len')}, "
                             f"this buffer has max_trial_len={self.max_trial_len}")

    def load_state_dict(self, state_dict: dict) -> None:
        """Load a table written by :meth:`state_dict`, after :meth:`check_state`."""
        count, offset = self.check_state(state_dict)
        self.index.load_state_dict(state_dict["index"])
        self._write_count, self._write_count_offset = count, offset

    def check_state(self, state_dict: dict) -> tuple[int, int]:
        """The write count and its offset of a ``state_dict`` fit for this writer; else a ValueError naming a field."""
        if not isinstance(state_dict, dict) or not isinstance(state_dict.get("index"), dict):
            raise ValueError("expected a dict with the trial table under 'index'")
        self.check_compatible(state_dict)
        index = check_index_state(state_dict["index"], self.index.capacity)
        count, offset = state_dict.get("_write_count"), state_dict.get("_write_count_offset", 0)
        for name, v in (("_write_count", count), ("_write_count_offset", offset)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{name}: expected a non-negative integer, got {v!r}")
        if count != index["write_count"] + offset:
            emptied = f" (+ {offset} written before the buffer was emptied)" if offset else ""
            raise ValueError(f"_write_count: {count} steps written, but the trial table has "
                             f"index.write_count={index['write_count']}{emptied}")
        return count, offset

    def dumps(self, path) -> None:
        path = Path(path).absolute()
        path.mkdir(parents=True, exist_ok=True)
        save_durably(path / "trial_writer.pt", self.state_dict())  # a failed write names the file
        meta = json.dumps({"write_count": self._write_count, "num_units": self.index.num_units})
        write_durably(path / "metadata.json", lambda f: f.write(meta.encode()))

    @staticmethod
    def read(path) -> dict:
        """The trial table written by :meth:`dumps` into the folder ``path`` (read with ``load_tensors``)."""
        return load_tensors(Path(path).absolute() / "trial_writer.pt")

    def loads(self, path) -> None:
        """Load the trial table written by :meth:`dumps` (checked first; an error names the file and the field)."""
        file = Path(path).absolute() / "trial_writer.pt"
        state = self.read(path)
        try:
            self.load_state_dict(state)
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{file}: {e}") from e

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(capacity={self.index.capacity}, max_trial_len={self.max_trial_len}, "
                f"units={self.index.num_units})")
